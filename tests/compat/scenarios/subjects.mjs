// subjects.upsert / list / get / delete (shared server; params.k1 / params.k2 are unique keys).
import { failure, recorder, run } from './lib.mjs';

run({
  async main(om, { k1, k2 }) {
    const { out, rec } = recorder();
    // README example shape: [{ key, displayName }]
    await rec('upsert', () =>
      om.subjects.upsert([
        { key: k1, displayName: 'ACME' },
        { key: k2, displayName: 'Globex', metadata: { tier: 'gold', seats: 5 }, stripeCustomerId: 'cus_123' },
      ]),
    );
    await rec('list', () => om.subjects.list());
    await rec('getByKey', () => om.subjects.get(k1));
    await rec('getById', () => om.subjects.get(out.upsert[1].id));
    // Partial update: absent fields stay, null clears.
    await rec('update', () =>
      om.subjects.upsert([{ key: k2, displayName: 'Globex Corp', stripeCustomerId: null }]),
    );
    await rec('getUpdated', () => om.subjects.get(k2));
    await rec('delete', () => om.subjects.delete(k1));
    out.getDeleted = await failure(() => om.subjects.get(k1));
    out.deleteAgain = await failure(() => om.subjects.delete(k1));
    await rec('listAfterDelete', () => om.subjects.list());
    return out;
  },
});
