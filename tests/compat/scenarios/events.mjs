// events.ingest + events.list on a server of its own (test clock, empty database), so the
// list answer is exactly the events ingested here.
import { failure, recorder, run } from './lib.mjs';

run({
  async main(om, { s, meter }) {
    const { out, rec } = recorder();
    // The README / seed 004 example, verbatim apart from the subject and the time.
    await rec('ingestReadme', () =>
      om.events.ingest({
        specversion: '1.0',
        id: 'id-1',
        source: 'my-app',
        type: 'my-type',
        subject: s,
        time: new Date('2024-01-01T00:00:00.000Z'),
        data: { api_calls: 1 },
      }),
    );
    // Only the required attributes: the SDK fills in specversion, id (uuid), source; the
    // server fills in the time (its clock).
    await rec('ingestMinimal', () =>
      om.events.ingest({ type: 'request', subject: s, data: { method: 'GET', route: '/x' } }),
    );
    await rec('ingestBatch', () =>
      om.events.ingest([
        {
          id: 'b-1',
          source: 'batch',
          type: 'prompt',
          subject: s,
          time: new Date('2024-01-02T03:04:05.678Z'),
          data: { tokens: 12, model: 'gpt-4', type: 'input' },
        },
        {
          id: 'b-2',
          source: 'batch',
          type: 'prompt',
          subject: s,
          time: new Date('2024-01-03T00:00:00Z'),
          datacontenttype: 'application/json',
          data: { tokens: '3.5', model: 'gpt-4', type: 'output' },
        },
      ]),
    );
    // Duplicate (same source + id): accepted, dropped.
    await rec('ingestDuplicate', () =>
      om.events.ingest({ id: 'b-1', source: 'batch', type: 'prompt', subject: s, data: { tokens: 999 } }),
    );
    // The SDK refuses other data content types itself, before any request.
    out.badContentType = await failure(() =>
      om.events.ingest({ type: 'prompt', subject: s, datacontenttype: 'text/plain', data: {} }),
    );
    await rec('list', () => om.events.list());
    await rec('listLimit', () => om.events.list({ limit: 2 }));

    // meters.create (POST /api/v1/meters; OpenMeter HEAD answers 200), then get it back
    await rec('meterCreate', () =>
      om.meters.create({
        slug: meter,
        description: 'Seconds of compute',
        eventType: 'compute',
        aggregation: 'SUM',
        valueProperty: '$.seconds',
        groupBy: { region: '$.region' },
      }),
    );
    await rec('meterGet', () => om.meters.get(meter));
    await rec('meterList', () => om.meters.list());
    return out;
  },
});
