// Shared plumbing for the compatibility scenarios.
//
// Every scenario is run by the pytest wrappers as
//
//     node scenarios/<name>.mjs <baseUrl> '<json params>' [step]
//
// (or with OPENMETER_URL / COMPAT_PARAMS / COMPAT_STEP in the environment) and prints ONE JSON
// document on stdout with what the SDK returned. Values the SDK returned as `undefined`
// (204 / empty responses) are printed as the string "<undefined>" so the Python side can
// assert them. Any unexpected failure exits non-zero with the error (HttpError details
// included) on stderr.

import { OpenMeter } from '@openmeter/sdk';

export const UNDEFINED = '<undefined>';

export function config() {
  const baseUrl = process.argv[2] || process.env.OPENMETER_URL;
  if (!baseUrl) {
    throw new Error('usage: node <scenario> <baseUrl> [json params] [step]');
  }
  const raw = process.argv[3] || process.env.COMPAT_PARAMS || '{}';
  const params = JSON.parse(raw);
  const step = process.argv[4] || process.env.COMPAT_STEP || 'main';
  return { baseUrl, params, step };
}

export function client(baseUrl) {
  return new OpenMeter({ baseUrl });
}

/** Replace `undefined` (not representable in JSON) with a visible marker, recursively. */
export function visible(value) {
  if (value === undefined) return UNDEFINED;
  if (Array.isArray(value)) return value.map(visible);
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = visible(v);
    return out;
  }
  return value;
}

/** Everything an SDK error carries, as plain JSON. */
export function describeError(err) {
  if (err && err.name === 'HttpError') {
    return {
      name: err.name,
      message: err.message,
      label: err.label,
      statusCode: err.statusCode,
      problem: err.problem === undefined ? UNDEFINED : err.problem,
    };
  }
  return {
    name: err?.name ?? typeof err,
    message: err?.message ?? String(err),
    stack: err?.stack,
  };
}

/**
 * Run a call that is EXPECTED to fail; return the error's details. If it succeeds, the
 * result is reported as {"unexpectedSuccess": value} so the assertion on the Python side
 * shows what the server answered.
 */
export async function failure(fn) {
  try {
    const value = await fn();
    return { unexpectedSuccess: visible(value) };
  } catch (err) {
    return describeError(err);
  }
}

/** Plain fetch, for what the SDK has no method for; returns status, content type and body. */
export async function rawFetch(url, init = {}) {
  const resp = await fetch(url, init);
  const text = await resp.text();
  let body = text;
  try {
    body = text.length ? JSON.parse(text) : '';
  } catch {
    // keep the text
  }
  return {
    status: resp.status,
    contentType: resp.headers.get('content-type'),
    body,
  };
}

/**
 * Entry point: `steps` maps a step name to an async function (om, params, ctx) => result.
 * The result is printed as one JSON document.
 */
export async function run(steps) {
  let step = 'main';
  try {
    const cfg = config();
    step = cfg.step;
    const fn = steps[step];
    if (!fn) throw new Error(`unknown step ${JSON.stringify(step)}; have ${Object.keys(steps).join(', ')}`);
    const om = client(cfg.baseUrl);
    const result = await fn(om, cfg.params, cfg);
    process.stdout.write(JSON.stringify(visible(result)) + '\n');
  } catch (err) {
    process.stderr.write(
      JSON.stringify({ failedStep: step, error: describeError(err) }, null, 2) + '\n',
    );
    process.exitCode = 1;
  }
}

/** Record each SDK call's result under a label (keeps scenarios readable). */
export function recorder() {
  const out = {};
  const rec = async (label, fn) => {
    try {
      out[label] = await fn();
    } catch (err) {
      err.message = `${label}: ${err.message}`;
      if (err.name === 'HttpError') {
        err.label = label;
      }
      throw err;
    }
    return out[label];
  };
  return { out, rec };
}
