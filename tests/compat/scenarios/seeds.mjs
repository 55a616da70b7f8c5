// The code of the seed documents (the OpenMeter entitlements launch post, the "Get Started"
// guide and the SDK README), run against the SHARED server with the system clock.
// Only the names differ: params.customer replaces 'customer-1', params.aiTokens replaces
// 'ai_tokens', params.gpt4Tokens replaces 'gpt_4_tokens'.
import { failure, recorder, run } from './lib.mjs';

run({
  async main(openmeter, { customer, aiTokens, gpt4Tokens }) {
    const { out, rec } = recorder();

    // --- seed 000: "Control Usage with Entitlements" ---------------------------------
    // Create feature GPT Tokens
    const feature = await rec('feature', () =>
      openmeter.features.create({
        key: aiTokens,
        name: 'AI Tokens',
        meterSlug: 'tokens_total',
      }),
    );
    // Give access to monthly 10 million tokens to customer-1
    const entitlement = await rec('entitlement', () =>
      openmeter.subjects.createEntitlement(customer, {
        type: 'metered',
        featureKey: aiTokens,
        issueAfterReset: 10000000, // 10 Million tokens
        usagePeriod: {
          interval: 'MONTH',
        },
        isSoftLimit: false,
      }),
    );

    // --- seed 001/002: "Get Started" -----------------------------------------------------
    await rec('featureGpt4', () =>
      openmeter.features.create({
        key: gpt4Tokens,
        name: 'GTP-4 Tokens',
        meterSlug: 'tokens_total',
        meterGroupByFilters: {
          model: 'gpt-4',
        },
      }),
    );
    await rec('entitlementGpt4', () =>
      openmeter.subjects.createEntitlement(customer, {
        type: 'metered',
        featureKey: gpt4Tokens,
        issueAfterReset: 1_000_000, // Issue 1 million tokens after each reset (starting now)
        usagePeriod: {
          interval: 'MONTH',
        },
        isSoftLimit: false, // If balance falls to 0, access is denied
      }),
    );

    // --- seed 004 (README): ingest usage, as the README does (time: new Date()) -------------
    await rec('ingest', () =>
      openmeter.events.ingest([
        { type: 'prompt', subject: customer, time: new Date(), data: { tokens: 1000, model: 'gpt-4', type: 'input' } },
        { type: 'prompt', subject: customer, time: new Date(), data: { tokens: 500, model: 'gpt-3.5', type: 'output' } },
      ]),
    );

    // Check access (seed 000 / 001)
    const value = await rec('value', () => openmeter.subjects.getEntitlementValue(customer, aiTokens));
    const { hasAccess, balance, usage, overage } = value;
    out.destructured = { hasAccess, balance, usage, overage };
    await rec('valueGpt4', () => openmeter.subjects.getEntitlementValue(customer, gpt4Tokens));
    // seed 000 reads 'gpt_tokens' although it created 'ai_tokens': that key does not exist.
    out.seedTypo = await failure(() => openmeter.subjects.getEntitlementValue(customer, `${aiTokens}_typo`));

    // The history of the entitlements created a moment ago, as a dashboard would ask for it
    // (windowSize is required; from defaults to lastReset, to to now).
    await rec('historyDay', () =>
      openmeter.subjects.getEntitlementHistory(customer, entitlement.id, { windowSize: 'DAY' }),
    );
    await rec('historyHour', () =>
      openmeter.subjects.getEntitlementHistory(customer, aiTokens, { windowSize: 'HOUR' }),
    );
    await rec('historyGpt4', () =>
      openmeter.subjects.getEntitlementHistory(customer, gpt4Tokens, { windowSize: 'DAY' }),
    );

    // README: the default grant issued by issueAfterReset, and the entitlement listings.
    await rec('grants', () => openmeter.subjects.listEntitlementGrants(customer, aiTokens));
    await rec('entitlements', () => openmeter.subjects.listEntitlements(customer));
    await rec('getEntitlement', () => openmeter.subjects.getEntitlement(customer, entitlement.id));
    await rec('feature2', () => openmeter.features.get(feature.key));

    // README calls verbatim. getEntitlement / deleteEntitlement by feature key work (Allotment
    // resolves "id or feature key" on every subject-entitlement route); getEntitlementHistory
    // without params lacks the required windowSize; resetEntitlementUsage as printed has no
    // entitlement id (the options object lands in the path as "[object Object]").
    await rec('readmeGetByKey', () => openmeter.subjects.getEntitlement(customer, aiTokens));
    out.readmeHistory = await failure(() => openmeter.subjects.getEntitlementHistory(customer, aiTokens));
    out.readmeReset = await failure(() => openmeter.subjects.resetEntitlementUsage(customer, { retainAnchor: true }));
    await rec('readmeDeleteByKey', () => openmeter.subjects.deleteEntitlement(customer, aiTokens));
    out.valueAfterDelete = await failure(() => openmeter.subjects.getEntitlementValue(customer, aiTokens));
    return out;
  },
});
