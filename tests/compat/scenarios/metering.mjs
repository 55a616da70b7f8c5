// Metering through the SDK: events.ingest (one event and a batch), meters.list/get/query/subjects.
// Runs on the SHARED server: params.a / params.b are unique subjects of this test only.
// Event times are fixed dates in the past so every query answer is deterministic.
import { WindowSize } from '@openmeter/sdk';
import { recorder, run } from './lib.mjs';

const prompt = (subject, time, tokens, model, type) => ({
  type: 'prompt',
  subject,
  time: new Date(time),
  data: { tokens, model, type },
});

run({
  async main(om, { a, b }) {
    const { out, rec } = recorder();

    // One event (application/cloudevents+json), seed-004 style with every attribute given.
    await rec('ingestOne', () =>
      om.events.ingest({
        specversion: '1.0',
        id: `${a}-1`,
        source: 'my-app',
        ...prompt(a, '2024-01-01T00:10:00.000Z', 100, 'gpt-4', 'input'),
      }),
    );
    // A batch (application/cloudevents-batch+json); ids/sources defaulted by the SDK.
    await rec('ingestBatch', () =>
      om.events.ingest([
        prompt(a, '2024-01-01T00:20:00.000Z', 50, 'gpt-4', 'output'),
        prompt(a, '2024-01-01T01:30:00.000Z', 200, 'gpt-3.5', 'input'),
        prompt(a, '2024-01-02T10:00:30.500Z', 25, 'gpt-4', 'input'),
        prompt(b, '2024-01-01T00:15:00.000Z', 7, 'gpt-4', 'input'),
        // around the spring-forward day in Budapest (2024-03-31 has 23 hours)
        prompt(b, '2024-03-31T21:30:00.000Z', 11, 'gpt-4', 'input'),
        prompt(b, '2024-03-31T22:30:00.000Z', 13, 'gpt-4', 'input'),
        { type: 'request', subject: a, time: new Date('2024-01-01T00:01:00Z'), data: { method: 'GET', route: '/a' } },
        { type: 'request', subject: a, time: new Date('2024-01-01T00:02:00Z'), data: { method: 'POST', route: '/a' } },
        { type: 'request', subject: a, time: new Date('2024-01-01T00:03:00Z'), data: { method: 'GET', route: '/b' } },
      ]),
    );
    // The same id + source again: deduplicated, still accepted.
    await rec('ingestDuplicate', () =>
      om.events.ingest({
        id: `${a}-1`,
        source: 'my-app',
        ...prompt(a, '2024-01-01T00:11:00.000Z', 100000, 'gpt-4', 'input'),
      }),
    );

    await rec('list', () => om.meters.list());
    await rec('getBySlug', () => om.meters.get('tokens_total'));
    await rec('getById', () => om.meters.get(out.getBySlug.id));
    await rec('getCount', () => om.meters.get('api_requests_total'));

    const day1 = new Date('2024-01-01T00:00:00Z');
    const day3 = new Date('2024-01-03T00:00:00Z');
    await rec('total', () => om.meters.query('tokens_total', { subject: [a], from: day1, to: day3 }));
    await rec('totalNoRange', () => om.meters.query('tokens_total', { subject: [a] }));
    await rec('hourly', () =>
      om.meters.query('tokens_total', {
        subject: [a],
        from: day1,
        to: new Date('2024-01-01T03:00:00Z'),
        windowSize: WindowSize.HOUR,
      }),
    );
    await rec('byModel', () =>
      om.meters.query('tokens_total', { subject: [a], groupBy: ['model'], from: day1, to: day3 }),
    );
    await rec('filtered', () =>
      om.meters.query('tokens_total', {
        subject: [a],
        groupBy: ['model', 'type'],
        filterGroupBy: { model: 'gpt-4' },
        from: day1,
        to: day3,
      }),
    );
    await rec('dailyBudapest', () =>
      om.meters.query('tokens_total', {
        subject: [a],
        from: new Date('2023-12-31T23:00:00Z'),
        to: new Date('2024-01-02T23:00:00Z'),
        windowSize: WindowSize.DAY,
        windowTimeZone: 'Europe/Budapest',
      }),
    );
    await rec('dstBudapest', () =>
      om.meters.query('tokens_total', {
        subject: [b],
        from: new Date('2024-03-30T23:00:00Z'),
        to: new Date('2024-04-01T22:00:00Z'),
        windowSize: WindowSize.DAY,
        windowTimeZone: 'Europe/Budapest',
      }),
    );
    await rec('twoSubjects', () =>
      om.meters.query('tokens_total', { subject: [a, b], from: day1, to: day3 }),
    );
    await rec('bySubjectGroupBy', () =>
      om.meters.query('tokens_total', {
        subject: [a, b],
        groupBy: ['subject', 'model'],
        filterGroupBy: { model: 'gpt-4' },
        from: day1,
        to: day3,
      }),
    );
    await rec('countByMethod', () =>
      om.meters.query('api_requests_total', { subject: [a], groupBy: ['method'], from: day1, to: day3 }),
    );
    await rec('countMinute', () =>
      om.meters.query('api_requests_total', {
        subject: [a],
        from: day1,
        to: new Date('2024-01-01T00:03:00Z'),
        windowSize: WindowSize.MINUTE,
        filterGroupBy: { route: '/a' },
      }),
    );
    await rec('subjectsTokens', () => om.meters.subjects('tokens_total'));
    await rec('subjectsRequests', () => om.meters.subjects('api_requests_total'));
    return out;
  },
});
