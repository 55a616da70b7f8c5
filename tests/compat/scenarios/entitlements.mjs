// The entitlement surface of the SDK on a server of its own with a test clock.
// The Python side runs the steps in order and moves the clock between them:
//   setup  at 2023-01-01T00:00:00Z
//   day1   at 2023-01-02T00:00:00Z
//   later  at 2023-01-02T01:00:00Z
// params: s (subject), fp / fg / fb / fs (feature keys), and ids returned by earlier steps.
import { failure, recorder, run } from './lib.mjs';

const T0 = '2023-01-01T00:00:00Z';

run({
  async setup(om, { s, s2, s3, fp, fg, fb, fs }) {
    const { out, rec } = recorder();
    await rec('featurePlain', () =>
      om.features.create({ key: fp, name: 'Plain Tokens', meterSlug: 'tokens_total', metadata: { team: 'ai' } }),
    );
    // seed 001: a metered feature filtered on a meter groupBy value
    await rec('featureGpt4', () =>
      om.features.create({
        key: fg,
        name: 'GPT-4 Tokens',
        meterSlug: 'tokens_total',
        meterGroupByFilters: { model: 'gpt-4' },
      }),
    );
    await rec('featureBool', () => om.features.create({ key: fb, name: 'SSO' }));
    await rec('featureStatic', () => om.features.create({ key: fs, name: 'Models' }));
    await rec('featureGetByKey', () => om.features.get(fp));
    await rec('featureGetById', () => om.features.get(out.featureGpt4.id));
    await rec('featureList', () => om.features.list());
    await rec('featureListPaged', () =>
      om.features.list({ meterSlug: ['tokens_total'], page: 1, pageSize: 10, orderBy: 'createdAt' }),
    );

    await rec('metered', () =>
      om.subjects.createEntitlement(s, {
        type: 'metered',
        featureKey: fp,
        usagePeriod: { interval: 'MONTH' },
        metadata: { plan: 'pro' },
      }),
    );
    await rec('meteredGpt4', () =>
      om.subjects.createEntitlement(s, {
        type: 'metered',
        featureId: out.featureGpt4.id,
        usagePeriod: { interval: 'DAY', anchor: new Date(T0) },
        isSoftLimit: true,
        issueAfterReset: 100,
        issueAfterResetPriority: 5,
      }),
    );
    await rec('static', () =>
      om.subjects.createEntitlement(s, {
        type: 'static',
        featureKey: fs,
        config: JSON.stringify({ integrations: ['github'] }),
      }),
    );
    await rec('boolean', () => om.subjects.createEntitlement(s, { type: 'boolean', featureKey: fb }));
    // subjectIdOrKey: the ULID of an upserted subject, and a key with a space (sent as %20)
    const [upserted] = await rec('upsertS2', () => om.subjects.upsert([{ key: s2 }]));
    await rec('staticBySubjectId', () =>
      om.subjects.createEntitlement(upserted.id, { type: 'static', featureKey: fs, config: '{}' }),
    );
    await rec('staticSpaceKey', () =>
      om.subjects.createEntitlement(s3, { type: 'static', featureKey: fs, config: '[1]' }),
    );
    await rec('valueSpaceKey', () => om.subjects.getEntitlementValue(s3, fs));
    await rec('valueBySubjectId', () => om.subjects.getEntitlementValue(upserted.id, fs));

    // The SDK README's grant example, verbatim (recurrence, rollover and expiration).
    await rec('grantReadme', () =>
      om.subjects.createEntitlementGrant(s, fp, {
        amount: 100,
        priority: 1,
        effectiveAt: '2023-01-01T00:00:00Z',
        expiration: {
          duration: 'HOUR',
          count: 12,
        },
        minRolloverAmount: 100,
        maxRolloverAmount: 100,
        recurrence: {
          interval: 'MONTH',
          anchor: '2024-06-28T18:29:44.867Z',
        },
      }),
    );
    await rec('grantPromo', () =>
      om.subjects.createEntitlementGrant(s, out.metered.id, {
        amount: 1000,
        priority: 2,
        effectiveAt: new Date(T0),
        expiration: { duration: 'YEAR', count: 1 },
        maxRolloverAmount: 500,
        metadata: { reason: 'promo' },
      }),
    );
    await rec('ingest', () =>
      om.events.ingest([
        { type: 'prompt', subject: s, time: new Date('2023-01-01T00:30:00Z'), data: { tokens: 30, model: 'gpt-4', type: 'input' } },
        { type: 'prompt', subject: s, time: new Date('2023-01-01T13:00:00Z'), data: { tokens: 200, model: 'gpt-3.5', type: 'input' } },
      ]),
    );
    return out;
  },

  async day1(om, { s, fp, fg, fb, fs, metered }) {
    const { out, rec } = recorder();
    await rec('valueByKey', () => om.subjects.getEntitlementValue(s, fp));
    await rec('valueById', () => om.subjects.getEntitlementValue(s, metered));
    await rec('valueAt', () => om.subjects.getEntitlementValueAt(s, fp, new Date('2023-01-01T06:00:00Z')));
    await rec('valueAtBeforeStart', () =>
      om.subjects.getEntitlementValueAt(s, metered, new Date('2022-12-31T00:00:00Z')),
    );
    await rec('valueGpt4', () => om.subjects.getEntitlementValue(s, fg));
    await rec('valueGpt4At', () => om.subjects.getEntitlementValueAt(s, fg, new Date('2023-01-01T12:00:00Z')));
    await rec('valueStatic', () => om.subjects.getEntitlementValue(s, fs));
    await rec('valueBoolean', () => om.subjects.getEntitlementValue(s, fb));
    await rec('grantsByKey', () => om.subjects.listEntitlementGrants(s, fp));
    await rec('grantsById', () =>
      om.subjects.listEntitlementGrants(s, metered, { includeDeleted: false, orderBy: 'updatedAt' }),
    );
    await rec('grantsGpt4', () => om.subjects.listEntitlementGrants(s, fg));
    await rec('grantsList', () => om.grants.list({ subject: [s] }));
    await rec('grantsListPaged', () => om.grants.list({ subject: [s], feature: [fp], page: 1, pageSize: 10 }));
    await rec('history', () =>
      om.subjects.getEntitlementHistory(s, metered, {
        windowSize: 'DAY',
        from: new Date(T0),
        to: new Date('2023-01-02T00:00:00Z'),
        windowTimeZone: 'UTC',
      }),
    );
    await rec('historyByKey', () =>
      om.subjects.getEntitlementHistory(s, fp, {
        windowSize: 'HOUR',
        from: new Date('2023-01-01T12:00:00Z'),
        to: new Date('2023-01-01T14:00:00Z'),
      }),
    );
    await rec('reset', () => om.subjects.resetEntitlementUsage(s, metered, { retainAnchor: true }));
    await rec('afterReset', () => om.subjects.getEntitlement(s, metered));
    await rec('valueAfterReset', () => om.subjects.getEntitlementValue(s, fp));
    return out;
  },

  async later(om, { s, fp, fb, fs, metered, meteredGpt4, boolean, staticId, grantPromo }) {
    const { out, rec } = recorder();
    await rec('voidGrant', () => om.grants.delete(grantPromo));
    await rec('valueAfterVoid', () => om.subjects.getEntitlementValue(s, fp));
    await rec('grantsAfterVoid', () => om.grants.list({ subject: [s], feature: [fp] }));
    await rec('override', () =>
      om.subjects.overrideEntitlement(s, fp, {
        type: 'metered',
        featureKey: fp,
        usagePeriod: { interval: 'WEEK' },
        issueAfterReset: 500,
      }),
    );
    await rec('overridden', () => om.entitlements.get(metered));
    await rec('valueAfterOverride', () => om.subjects.getEntitlementValue(s, fp));
    await rec('deleteBoolean', () => om.subjects.deleteEntitlement(s, boolean));
    out.valueDeleted = await failure(() => om.subjects.getEntitlementValue(s, fb));
    await rec('deletedBoolean', () => om.entitlements.get(boolean));
    await rec('listSubject', () => om.subjects.listEntitlements(s));
    await rec('getSubjectEntitlement', () => om.subjects.getEntitlement(s, staticId));
    await rec('list', () => om.entitlements.list({ subject: [s] }));
    await rec('listStaticPaged', () =>
      om.entitlements.list({ subject: [s], entitlementType: ['static'], page: 1, pageSize: 10 }),
    );
    await rec('getGpt4', () => om.entitlements.get(meteredGpt4));
    await rec('deleteFeature', () => om.features.delete(fb));
    out.getDeletedFeature = await failure(() => om.features.get(fb));
    await rec('featuresWithArchived', () => om.features.list({ includeArchived: true }));
    return out;
  },
});
