// portal.createToken / portal.invalidateTokens on a server of its own (test clock
// 2024-01-01T00:00:00Z), and what a token can do on GET /api/v1/portal/meters/{slug}/query
// (plain fetch with Authorization: Bearer <token>; the SDK has no method for it).
import { recorder, rawFetch, run } from './lib.mjs';

run({
  async main(om, { s, o }, { baseUrl }) {
    const { out, rec } = recorder();
    const query = (slug, token, qs = '') =>
      rawFetch(new URL(`/api/v1/portal/meters/${slug}/query${qs}`, baseUrl), {
        headers: token ? { Authorization: `Bearer ${token}`, Accept: 'application/json' } : {},
      });

    await rec('ingest', () =>
      om.events.ingest([
        { type: 'prompt', subject: s, time: new Date('2023-12-31T10:00:00Z'), data: { tokens: 100, model: 'gpt-4', type: 'input' } },
        { type: 'prompt', subject: s, time: new Date('2023-12-31T11:00:00Z'), data: { tokens: 50, model: 'gpt-3.5', type: 'input' } },
        { type: 'prompt', subject: o, time: new Date('2023-12-31T10:30:00Z'), data: { tokens: 999, model: 'gpt-4', type: 'input' } },
      ]),
    );
    // README: const token = await openmeter.portal.createToken({ subject: 'customer-1' })
    const a1 = await rec('tokenA1', () => om.portal.createToken({ subject: s, allowedMeterSlugs: ['tokens_total'] }));
    const a2 = await rec('tokenA2', () => om.portal.createToken({ subject: s }));
    const o1 = await rec('tokenO1', () =>
      om.portal.createToken({ subject: o, expiresAt: new Date('2024-01-02T00:00:00Z') }),
    );
    const o2 = await rec('tokenO2', () => om.portal.createToken({ subject: o }));

    out.queryA1 = await query('tokens_total', a1.token, '?groupBy=model');
    out.queryA1Forbidden = await query('api_requests_total', a1.token);
    out.queryA2 = await query('tokens_total', a2.token);
    // a token never reads another subject's usage, whatever the query string says
    out.queryA2OtherSubject = await query('tokens_total', a2.token, `?subject=${encodeURIComponent(o)}`);
    out.queryA2GroupBySubject = await query('tokens_total', a2.token, '?groupBy=subject');
    out.queryNoToken = await query('tokens_total', null);
    out.queryO2 = await query('tokens_total', o2.token);

    // Not typed by the SDK (it only declares `subject`), but sent as given.
    await rec('invalidateById', () => om.portal.invalidateTokens({ id: o2.id }));
    out.queryO2AfterId = await query('tokens_total', o2.token);
    out.queryO1AfterId = await query('tokens_total', o1.token);

    await rec('invalidateSubject', () => om.portal.invalidateTokens({ subject: s }));
    out.queryA1AfterSubject = await query('tokens_total', a1.token);
    out.queryA2AfterSubject = await query('tokens_total', a2.token);
    out.queryO1AfterSubject = await query('tokens_total', o1.token);

    // README: await openmeter.portal.invalidateTokens()  -> body {} -> every token
    await rec('invalidateAll', () => om.portal.invalidateTokens());
    out.queryO1AfterAll = await query('tokens_total', o1.token);

    // a token created after an invalidation works (invalidation is not a ban on the subject)
    const o3 = await rec('tokenO3', () => om.portal.createToken({ subject: o }));
    out.queryO3 = await query('tokens_total', o3.token);
    return out;
  },

  // the Python side moves the test clock, then asks again with the same token
  async query(om, { token }, { baseUrl }) {
    return rawFetch(new URL('/api/v1/portal/meters/tokens_total/query', baseUrl), {
      headers: { Authorization: `Bearer ${token}` },
    });
  },
});
