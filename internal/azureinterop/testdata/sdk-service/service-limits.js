// Azure's Node service SDK (azure-iothub) at the edges of its AMQP contract, run against c2d-hub by
// internal/azureinterop (TestServiceSDKLimits): a wrong key, a full device queue, and SAS token
// renewal on the same connection. Only the AMQP port differs from an Azure deployment (see
// service.js); the devices exist already and nothing receives.
//
// Token renewal: azure-iothub 1.16.6 has no option for it. Client.fromConnectionString signs its
// token to expire at anHourFromNow() (now + 3600 s) of its own copy of azure-iot-common's
// authorization module (dist/common-core/authorization.js), and the Amqp
// transport's `_renewalNumberOfMilliseconds` (2,700,000: 45 min) arms the timer that re-signs
// with anHourFromNow() and puts the new token on $cbs over the same connection
// (dist/amqp.js: _handleSASRenewal). Both are replaced here — anHourFromNow returns now +
// TOKEN_SECONDS, the transport renews every RENEW_MS — so the SDK's own renewal path runs within
// seconds.
//
// Environment: HUB_HOST, OWNER_KEY (iothubowner's key), AMQPS_PORT, FULL_DEVICE (its queue takes
// QUEUE_DEPTH messages), RENEW_DEVICE, TOKEN_SECONDS, RENEW_MS, NODE_EXTRA_CA_CERTS (the hub's CA).
// Output: one JSON object per line, {"step": ..., ...}; the Go test asserts on them.
'use strict';

const authorization = require('azure-iothub/dist/common-core/authorization');
const { Client, Amqp } = require('azure-iothub');
const { Message, NoRetry } = require('azure-iot-common');

const env = process.env;
const host = env.HUB_HOST;
const ownerCS = `HostName=${host};SharedAccessKeyName=iothubowner;SharedAccessKey=${env.OWNER_KEY}`;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const errName = (err) => err && err.constructor && err.constructor.name;
const fail = (step, err) => {
  out({ step, error: String(err && err.message || err), name: errName(err) });
  process.exit(1);
};

function amqp(renewMs) {
  return function (config) {
    const t = new Amqp(Object.assign({}, config, { host: `${host}:${env.AMQPS_PORT}` }));
    if (renewMs) t._renewalNumberOfMilliseconds = renewMs;
    return t;
  };
}

function msg(id) {
  const m = new Message(id);
  m.messageId = id;
  return m;
}

// send reports one Client.send: the error the caller sees, if any.
async function send(step, client, deviceId, id) {
  try {
    await client.send(deviceId, msg(id));
    out({ step, messageId: id });
    return true;
  } catch (err) {
    // A put-token failure comes wrapped in an Error: err.amqpError is the SDK's typed error. A
    // refused transfer is the typed error itself, with the AMQP error as its amqpError.
    out({ step, messageId: id, name: errName(err), cause: errName(err.amqpError), error: String(err.message),
      detail: err.amqpError ? String(err.amqpError.message) : '' });
    return false;
  }
}

async function main() {
  // 1. A wrong key: send (which opens the connection itself) fails with UnauthorizedError.
  const badKey = Buffer.from('not the key, not the key, not it!').toString('base64');
  const bad = Client.fromConnectionString(`HostName=${host};SharedAccessKeyName=service;SharedAccessKey=${badKey}`, amqp());
  bad.setRetryPolicy(new NoRetry());
  await send('bad-key-send', bad, env.FULL_DEVICE, 'bad-1');
  await bad.close().catch(() => {});

  // 2. The hub keeps serving: a good client fills the queue; one more is refused.
  const client = Client.fromConnectionString(ownerCS, amqp());
  client.setRetryPolicy(new NoRetry());
  const depth = Number(env.QUEUE_DEPTH);
  for (let i = 1; i <= depth; i++) {
    if (!(await send('fill', client, env.FULL_DEVICE, 'full-' + i))) fail('fill', 'send refused before the queue was full');
  }
  await send('over-full', client, env.FULL_DEVICE, 'full-' + (depth + 1));
  await client.close();

  // 3. Renewal: tokens of TOKEN_SECONDS, renewed every RENEW_MS on the same connection.
  authorization.anHourFromNow = () => Math.ceil(Date.now() / 1000 + Number(env.TOKEN_SECONDS));
  const renewing = Client.fromConnectionString(ownerCS, amqp(Number(env.RENEW_MS)));
  renewing.setRetryPolicy(new NoRetry());
  const firstExpiry = Number(renewing._transport._config.sharedAccessSignature.se) * 1000;
  if (!(firstExpiry - Date.now() < 60000)) fail('renew-token', 'the token does not expire within a minute: anHourFromNow was not replaced');
  let disconnects = 0;
  renewing.on('disconnect', () => { disconnects++; });
  try {
    await renewing.open();
  } catch (err) {
    fail('renew-open', err);
  }
  await send('renew-send', renewing, env.RENEW_DEVICE, 'renew-1');
  // The feedback link lives on the same token: it must not be detached when the first expires.
  const linkErrors = [];
  try {
    const receiver = await new Promise((resolve, reject) =>
      renewing.getFeedbackReceiver((err, r) => (err ? reject(err) : resolve(r))));
    receiver.on('error', (err) => linkErrors.push(String(err && err.message || err)));
    receiver.on('message', () => {});
  } catch (err) {
    fail('renew-feedback-receiver', err);
  }
  // Past the first token's expiry (plus a second for the hub's expiry timer), still connected.
  // Node's timers run on a monotonic clock truncated to the millisecond, so a timeout can fire a
  // millisecond early by Date.now() (seen in CI: 999 ms past): wait again until the wall clock agrees.
  while (Date.now() < firstExpiry + 1000) {
    await new Promise((resolve) => setTimeout(resolve, firstExpiry + 1000 - Date.now()));
  }
  out({ step: 'first-token-expired', pastExpiryMs: Date.now() - firstExpiry });
  await send('renew-send', renewing, env.RENEW_DEVICE, 'renew-2');
  out({ step: 'renew-disconnects', delivery: disconnects, errors: Object.fromEntries(linkErrors.map((e, i) => [i, e])) });
  await renewing.close();
  out({ step: 'done' });
  process.exit(0);
}

main().catch((err) => fail('main', err));
