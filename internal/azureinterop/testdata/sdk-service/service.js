// A backend written against Azure's Node service SDK (azure-iothub), with a device on Azure's
// device SDK, run against c2d-hub by internal/azureinterop (TestServiceSDK*). Only ports differ
// from an Azure deployment: Azure serves REST on 443 and AMQP on 5671, which a test cannot bind,
// so HTTPS requests without a port go to HTTPS_PORT (https.request is wrapped before the SDK
// loads), WebSockets to wss://{host}:443 go to HTTPS_PORT (the ws class is wrapped), and the AMQP
// transport is given AMQPS_PORT, the way GatewayHostName does for devices. Connection strings and
// tokens are exactly as against Azure.
//
// Environment: HUB_HOST, OWNER_KEY (iothubowner's key), HTTPS_PORT, AMQPS_PORT, MQTTS_PORT,
// DEVICE_TRANSPORT (amqp | amqpws | mqtt), NODE_EXTRA_CA_CERTS (the hub's CA).
// Output: one JSON object per line, {"step": ..., ...}; the Go test asserts on them.
'use strict';

const https = require('https');
const httpsRequest = https.request;
https.request = function (opts, cb) {
  if (opts && typeof opts === 'object' && !opts.port) opts = Object.assign({}, opts, { port: Number(process.env.HTTPS_PORT) });
  return httpsRequest.call(this, opts, cb);
};

// AmqpWs dials wss://{host}:443/$iothub/websocket with 443 hard-coded: point the WebSocket class
// the SDKs load (the `ws` package: the device side's, and azure-iothub's own copy) at HTTPS_PORT.
for (const from of [__dirname, require.resolve('azure-iothub')]) {
  const path = require.resolve('ws', { paths: [from] });
  const WS = require(path);
  class PortWS extends WS {
    constructor(url, ...rest) { super(String(url).replace(':443/', ':' + process.env.HTTPS_PORT + '/'), ...rest); }
  }
  require.cache[path].exports = PortWS;
}
const { Registry, Client, Amqp, AmqpWs } = require('azure-iothub');
const { Message } = require('azure-iot-common');
const device = require('azure-iot-device');
const deviceAmqp = require('azure-iot-device-amqp');
const deviceMqtt = require('azure-iot-device-mqtt');

const host = process.env.HUB_HOST;
const ownerCS = `HostName=${host};SharedAccessKeyName=iothubowner;SharedAccessKey=${process.env.OWNER_KEY}`;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (step, err) => {
  out({ step, error: String(err && err.message || err), name: err && err.constructor && err.constructor.name });
  process.exit(1);
};


// The service transport, pointed at the test's AMQPS port.
function amqpAt(port) {
  return function (config) { return new Amqp(Object.assign({}, config, { host: `${host}:${port}` })); };
}

function deviceClient(dev) {
  const key = dev.authentication.symmetricKey.primaryKey;
  const t = process.env.DEVICE_TRANSPORT;
  if (t === 'mqtt') {
    const cs = `HostName=${host};DeviceId=${dev.deviceId};SharedAccessKey=${key};GatewayHostName=${host}:${process.env.MQTTS_PORT}`;
    return device.Client.fromConnectionString(cs, deviceMqtt.Mqtt);
  }
  if (t === 'amqpws') {
    return device.Client.fromConnectionString(`HostName=${host};DeviceId=${dev.deviceId};SharedAccessKey=${key}`, deviceAmqp.AmqpWs);
  }
  const cs = `HostName=${host};DeviceId=${dev.deviceId};SharedAccessKey=${key};GatewayHostName=${host}:${process.env.AMQPS_PORT}`;
  return device.Client.fromConnectionString(cs, deviceAmqp.Amqp);
}

async function main() {
  const reg = Registry.fromConnectionString(ownerCS);
  const id = 'sdk-' + process.env.DEVICE_TRANSPORT;

  // Registry CRUD.
  let dev;
  try {
    dev = (await reg.create({ deviceId: id })).responseBody;
    out({ step: 'create', deviceId: dev.deviceId, etag: dev.etag });
    const got = (await reg.get(id)).responseBody;
    out({ step: 'get', deviceId: got.deviceId });
    const list = (await reg.list()).responseBody;
    out({ step: 'list', ids: list.map((d) => d.deviceId) });
    const upd = (await reg.update({ deviceId: id, status: 'enabled', etag: got.etag })).responseBody;
    out({ step: 'update', status: upd.status, etagChanged: upd.etag !== got.etag });
    await reg.create({ deviceId: id + '-gone' });
    const q = reg.createQuery('SELECT * FROM devices', 1);
    const queried = [];
    while (q.hasMoreResults) {
      const page = await new Promise((resolve, reject) => q.nextAsTwin((err, r) => (err ? reject(err) : resolve(r))));
      for (const tw of page) queried.push(tw.deviceId);
    }
    out({ step: 'query', ids: queried });
    await reg.delete(id + '-gone');
    out({ step: 'delete' });
    // The REST errors the SDK turns into its typed errors.
    const errs = {};
    const typed = async (name, op) => {
      try { await op(); errs[name] = null; } catch (err) { errs[name] = err.constructor.name; }
    };
    await typed('exists', () => reg.create({ deviceId: id }));
    await typed('missing', () => reg.get('no-such-device'));
    await typed('delete-missing', () => reg.delete('no-such-device')); // update and delete send If-Match: *
    out({ step: 'registry-errors', errors: errs });
  } catch (err) {
    fail('registry', err);
  }

  // Over AMQP the device settles by body: complete, reject, or abandon once then complete. Azure's
  // MQTT transport can only complete (it throws on reject and abandon).
  const dc = deviceClient(dev);
  const seen = {};
  dc.on('message', (msg) => {
    const body = msg.data.toString();
    seen[body] = (seen[body] || 0) + 1;
    const props = {};
    for (const p of msg.properties.propertyList) props[p.key] = p.value;
    out({ step: 'device-message', body, messageId: String(msg.messageId), props, delivery: seen[body],
      correlationId: String(msg.correlationId), contentType: msg.contentType, contentEncoding: msg.contentEncoding,
      hasExpiry: Boolean(msg.expiryTimeUtc) });
    const done = (err) => { if (err) out({ step: 'device-settle-error', body, error: String(err) }); };
    if (process.env.DEVICE_TRANSPORT === 'mqtt') dc.complete(msg, done);
    else if (body === 'reject') dc.reject(msg, done);
    else if (body === 'abandon' && seen[body] === 1) dc.abandon(msg, done);
    else dc.complete(msg, done);
  });
  try {
    await dc.open();
    out({ step: 'device-open' });
  } catch (err) {
    fail('device-open', err);
  }

  // A wrong key: open fails with the SDK's typed error.
  const badKey = Buffer.from('not the key, not the key, not it!').toString('base64');
  const bad = Client.fromConnectionString(`HostName=${host};SharedAccessKeyName=service;SharedAccessKey=${badKey}`, amqpAt(process.env.AMQPS_PORT));
  bad.setRetryPolicy(new (require('azure-iot-common').NoRetry)());
  try {
    await bad.open();
    out({ step: 'bad-key', error: null });
  } catch (err) {
    // The SDK wraps the put-token failure: err.amqpError is the UnauthorizedError.
    const cause = err.amqpError || err;
    out({ step: 'bad-key', name: cause.constructor.name, error: String(cause.message) });
  }

  // Send with ack full and read feedback.
  // Over WebSockets both sides: the service's AmqpWs and the device's.
  const ws = process.env.DEVICE_TRANSPORT === 'amqpws';
  const client = Client.fromConnectionString(ownerCS, ws ? AmqpWs : amqpAt(process.env.AMQPS_PORT));
  try {
    await client.open();
    out({ step: 'service-open' });
  } catch (err) {
    fail('service-open', err);
  }
  const want = new Set(['m-complete', 'm-reject', 'm-abandon']);
  let abandonedOne = null;
  const records = [];
  // Every record may arrive while the sends below are still awaited (a waiting receiver gets each
  // at once): the script finishes once both are done.
  let allFeedback;
  const feedbackDone = new Promise((resolve) => { allFeedback = resolve; });
  client.getFeedbackReceiver((err, receiver) => {
    if (err) fail('feedback-receiver', err);
    receiver.on('message', (msg) => {
      const recs = JSON.parse(msg.data.toString());
      // The SDK (rhea's autoaccept) accepts each batch on arrival and sends that disposition on the
      // next tick; an abandon in a later turn (setImmediate) is a second disposition, which must not
      // bring the batch back. (Abandoned in this handler, the two merge into one: released.)
      if (!abandonedOne) {
        abandonedOne = new Promise((resolve) => setImmediate(() => receiver.abandon(msg, (err) => {
          out({ step: 'feedback-abandon', error: err ? String(err) : '' });
          resolve();
        })));
      }
      for (const r of recs) {
        records.push(r);
        out({ step: 'feedback', record: r, contentType: msg.contentType });
        want.delete(r.originalMessageId);
      }
      if (want.size === 0) allFeedback();
    });
  });
  for (const body of ['complete', 'reject', 'abandon']) {
    const m = new Message(body);
    m.messageId = 'm-' + body;
    m.correlationId = 'c-' + body;
    m.ack = 'full';
    m.contentType = 'text/plain';
    m.contentEncoding = 'utf-8';
    m.expiryTimeUtc = Date.now() + 10 * 60 * 1000;
    m.properties.add('cmd', body);
    try {
      await client.send(id, m);
      out({ step: 'sent', messageId: m.messageId });
    } catch (err) {
      fail('send', err);
    }
  }
  try {
    await client.send('no-such-device', new Message('x'));
    out({ step: 'send-unknown', error: null });
  } catch (err) {
    out({ step: 'send-unknown', name: err.constructor.name, error: String(err.message) });
  }

  const timer = setTimeout(() => fail('feedback', 'timed out; still waiting for ' + [...want].join(', ')), 30000);
  await feedbackDone;
  clearTimeout(timer);
  await abandonedOne; // had the hub taken it, the batch comes back: here, or to the Go test over HTTP
  out({ step: 'done', records: records.length });
  await client.close();
  await dc.close();
  process.exit(0);
}

main().catch((err) => fail('main', err));
