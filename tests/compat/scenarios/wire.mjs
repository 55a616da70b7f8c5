// Wire conventions: every error must reach the SDK user as an HttpError carrying the parsed
// problem (application/problem+json exactly), with problem.status / detail. Shared server;
// params.s (subject) and params.f / params.fb (feature keys) are unique to the test.
import { failure, rawFetch, run } from './lib.mjs';

const UNKNOWN_ULID = '01ARZ3NDEKTSV4RRFFQ69G5FAV';

run({
  async main(om, { s, f, fb }, { baseUrl }) {
    const out = {};
    const from = new Date('2024-01-01T00:00:00Z');

    // meters
    out.meterGetUnknown = await failure(() => om.meters.get('no_such_meter'));
    out.meterQueryUnknown = await failure(() => om.meters.query('no_such_meter', {}));
    out.meterSubjectsUnknown = await failure(() => om.meters.subjects('no_such_meter'));
    out.queryBadGroupBy = await failure(() => om.meters.query('tokens_total', { groupBy: ['nope'] }));
    out.queryBadFilter = await failure(() => om.meters.query('tokens_total', { filterGroupBy: { nope: 'x' } }));
    out.queryBadTimeZone = await failure(() =>
      om.meters.query('tokens_total', { windowSize: 'HOUR', windowTimeZone: 'Mars/Olympus' }),
    );
    out.queryBadWindowSize = await failure(() => om.meters.query('tokens_total', { windowSize: 'FORTNIGHT' }));
    out.queryFromEqualsTo = await failure(() => om.meters.query('tokens_total', { from, to: from }));
    out.queryFromAfterTo = await failure(() =>
      om.meters.query('tokens_total', { from: new Date('2024-01-02T00:00:00Z'), to: from }),
    );

    // events
    out.ingestEmptySubject = await failure(() => om.events.ingest({ type: 'prompt', subject: '', data: {} }));
    out.ingestBatchOneBad = await failure(() =>
      om.events.ingest([
        { type: 'prompt', subject: s, time: from, data: { tokens: 1, model: 'm', type: 't' } },
        { type: '', subject: s, time: from, data: {} },
      ]),
    );
    // the valid half of the rejected batch was not stored
    out.afterBadBatch = await om.meters.query('tokens_total', { subject: [s] });
    out.listLimitTooBig = await failure(() => om.events.list({ limit: 101 }));
    out.listLimitZero = await failure(() => om.events.list({ limit: 0 }));

    // subjects
    out.subjectGetUnknown = await failure(() => om.subjects.get(`${s}_unknown`));
    out.subjectDeleteUnknown = await failure(() => om.subjects.delete(`${s}_unknown`));
    out.subjectBadStripe = await failure(() => om.subjects.upsert([{ key: s, stripeCustomerId: 'abc' }]));

    // features
    out.featureGetUnknown = await failure(() => om.features.get(`${f}_unknown`));
    out.featureDeleteUnknown = await failure(() => om.features.delete(`${f}_unknown`));
    out.featureUnknownMeter = await failure(() =>
      om.features.create({ key: `${f}_m`, name: 'x', meterSlug: 'no_such_meter' }),
    );
    out.featureBadKey = await failure(() => om.features.create({ key: 'Bad Key', name: 'x' }));
    out.featureBadFilter = await failure(() =>
      om.features.create({ key: `${f}_g`, name: 'x', meterSlug: 'tokens_total', meterGroupByFilters: { nope: 'x' } }),
    );
    const feature = await om.features.create({ key: f, name: 'Tokens', meterSlug: 'tokens_total' });
    await om.features.create({ key: fb, name: 'Flag' });
    out.featureDuplicate = await failure(() => om.features.create({ key: f, name: 'again', meterSlug: 'tokens_total' }));

    // entitlements
    out.entitlementNoPeriod = await failure(() => om.subjects.createEntitlement(s, { type: 'metered', featureKey: f }));
    out.entitlementUnknownFeature = await failure(() =>
      om.subjects.createEntitlement(s, { type: 'boolean', featureKey: `${f}_unknown` }),
    );
    out.entitlementMeteredOnFlag = await failure(() =>
      om.subjects.createEntitlement(s, { type: 'metered', featureKey: fb, usagePeriod: { interval: 'DAY' } }),
    );
    out.entitlementStaticBadConfig = await failure(() =>
      om.subjects.createEntitlement(s, { type: 'static', featureKey: fb, config: '{not json' }),
    );
    const ent = await om.subjects.createEntitlement(s, {
      type: 'metered',
      featureKey: f,
      usagePeriod: { interval: 'DAY' },
    });
    out.entitlementId = ent.id;
    out.featureId = feature.id;
    out.entitlementDuplicate = await failure(() =>
      om.subjects.createEntitlement(s, { type: 'metered', featureKey: f, usagePeriod: { interval: 'DAY' } }),
    );
    out.entitlementGetUnknown = await failure(() => om.entitlements.get(UNKNOWN_ULID));
    out.subjectEntitlementGetUnknown = await failure(() => om.subjects.getEntitlement(s, UNKNOWN_ULID));
    out.entitlementDeleteUnknown = await failure(() => om.subjects.deleteEntitlement(s, UNKNOWN_ULID));
    out.entitlementListBadType = await failure(() => om.entitlements.list({ entitlementType: ['INVALID_STR'] }));
    out.valueUnknownFeature = await failure(() => om.subjects.getEntitlementValue(s, `${f}_unknown`));
    out.historyNoWindowSize = await failure(() => om.subjects.getEntitlementHistory(s, ent.id, {}));
    out.resetInFuture = await failure(() =>
      om.subjects.resetEntitlementUsage(s, ent.id, { effectiveAt: new Date(Date.now() + 86400000) }),
    );
    out.overrideUnknown = await failure(() =>
      om.subjects.overrideEntitlement(s, UNKNOWN_ULID, { type: 'boolean', featureKey: fb }),
    );

    // grants
    out.grantZeroAmount = await failure(() =>
      om.subjects.createEntitlementGrant(s, ent.id, {
        amount: 0,
        effectiveAt: new Date(),
        expiration: { duration: 'DAY', count: 1 },
      }),
    );
    out.grantBadExpiration = await failure(() =>
      om.subjects.createEntitlementGrant(s, f, {
        amount: 1,
        effectiveAt: new Date(),
        expiration: { duration: 'DECADE', count: 1 },
      }),
    );
    out.grantUnknownEntitlement = await failure(() =>
      om.subjects.createEntitlementGrant(s, UNKNOWN_ULID, {
        amount: 1,
        effectiveAt: new Date(),
        expiration: { duration: 'DAY', count: 1 },
      }),
    );
    out.grantDeleteUnknown = await failure(() => om.grants.delete(UNKNOWN_ULID));
    out.grantListBadPageSize = await failure(() => om.grants.list({ page: 1, pageSize: 1001 }));

    // portal
    out.portalEmptySlugs = await failure(() => om.portal.createToken({ subject: s, allowedMeterSlugs: [] }));
    out.portalUnknownSlug = await failure(() =>
      om.portal.createToken({ subject: s, allowedMeterSlugs: ['no_such_meter'] }),
    );
    out.portalBadToken = await rawFetch(new URL('/api/v1/portal/meters/tokens_total/query', baseUrl), {
      headers: { Authorization: 'Bearer not-a-token' },
    });

    // routing (no SDK method: plain fetch)
    out.unknownRoute = await rawFetch(new URL('/api/v1/no-such-thing', baseUrl));
    out.wrongMethod = await rawFetch(new URL('/api/v1/meters', baseUrl), { method: 'PATCH' });
    out.successContentType = (await rawFetch(new URL('/api/v1/meters', baseUrl))).contentType;
    return out;
  },
});
