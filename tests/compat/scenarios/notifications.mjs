// notification.channels / rules / events (create, list, get, delete) on a server of its own
// that delivers to a real receiver (params: url, secret, feature, channelName, ruleName).
import { failure, recorder, run } from './lib.mjs';

run({
  async main(om, { url, secret, feature, channelName, ruleName }) {
    const { out, rec } = recorder();
    // README example shape
    const ch = await rec('channelCreate', () =>
      om.notification.channels.create({
        type: 'WEBHOOK',
        name: channelName,
        url,
        customHeaders: { 'X-Team': 'billing' },
        signingSecret: secret,
      }),
    );
    await rec('channelGenerated', () =>
      om.notification.channels.create({ type: 'WEBHOOK', name: `${channelName}-2`, url, disabled: true }),
    );
    await rec('channelList', () => om.notification.channels.list());
    await rec('channelGet', () => om.notification.channels.get(ch.id));
    const rule = await rec('ruleCreate', () =>
      om.notification.rules.create({
        type: 'entitlements.balance.threshold',
        name: ruleName,
        channels: [ch.id],
        features: [feature],
        thresholds: [
          { value: 50, type: 'PERCENT' },
          { value: 100, type: 'NUMBER' },
        ],
      }),
    );
    await rec('ruleList', () => om.notification.rules.list({ feature: [feature] }));
    await rec('ruleGet', () => om.notification.rules.get(rule.id));
    out.ruleBad = await failure(() =>
      om.notification.rules.create({
        type: 'entitlements.balance.threshold', name: 'x', channels: [ch.id], thresholds: [],
      }),
    );
    out.channelMissing = await failure(() => om.notification.channels.get('01J5Z602369ZDS9J60N3DV7SGE'));
    return out;
  },

  async events(om, { rule }) {
    const { out, rec } = recorder();
    const page = await rec('eventList', () => om.notification.events.list({ rule: [rule] }));
    await rec('eventGet', () => om.notification.events.get(page.items[0].id));
    return out;
  },

  async cleanup(om, { rule, channel }) {
    const { out, rec } = recorder();
    await rec('ruleDelete', () => om.notification.rules.delete(rule));
    await rec('channelDelete', () => om.notification.channels.delete(channel));
    await rec('ruleGetDeleted', () => om.notification.rules.get(rule));
    await rec('channelListAfter', () => om.notification.channels.list());
    return out;
  },
});
