// Azure's Node.js service SDK (azure-iothub) driven against c2d-hub by internal/azureinterop's Go
// test: Client.invokeDeviceMethod, Registry.getTwin and Registry.updateTwin, as an application
// calls them. The SDK always dials port 443 of the connection string's HostName; the only change
// here is an https.Agent (the SDK's http.agent option, set on its REST client) that dials the
// hub's test listener instead, keeping the host name for TLS verification. TLS is never disabled.
//
// Environment:
//   C2D_SERVICE_CONNECTION_STRING  HostName=localhost;SharedAccessKeyName=...;SharedAccessKey=...
//   C2D_CA_FILE                    PEM the hub's certificate chains to
//   C2D_HTTPS_ADDR                 host:port of the hub's HTTPS listener
// Arguments: a list of steps, each "invoke|DEVICE|METHOD|PAYLOADJSON|TIMEOUT", "getTwin|DEVICE" or
// "updateTwin|DEVICE|PATCHJSON|ETAG". stdout: one JSON line per step, {"step", "outcome", ...}.
'use strict';

const fs = require('fs');
const https = require('https');
const tls = require('tls');
const { Client, Registry } = require('azure-iothub');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function agentTo(addr, ca) {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i);
  const port = Number(addr.slice(i + 1));
  const agent = new https.Agent({ ca, keepAlive: true });
  agent.createConnection = (opts, cb) => {
    const sock = tls.connect({ ...opts, host, port, servername: opts.servername || opts.host, ca });
    if (cb) sock.once('secureConnect', () => cb(null, sock));
    return sock;
  };
  return agent;
}

function describe(err) {
  return { name: err.name || (err.constructor && err.constructor.name), message: String(err.message || err) };
}

async function main() {
  const cs = process.env.C2D_SERVICE_CONNECTION_STRING;
  const ca = fs.readFileSync(process.env.C2D_CA_FILE, 'utf8');
  const options = { http: { agent: agentTo(process.env.C2D_HTTPS_ADDR, ca) }, ca };
  const client = Client.fromConnectionString(cs);
  client._restApiClient.setOptions(options);
  const registry = Registry.fromConnectionString(cs);
  registry._restApiClient.setOptions(options);

  for (const step of process.argv.slice(2)) {
    const [op, device, ...rest] = step.split('|');
    try {
      if (op === 'invoke') {
        const [methodName, payload, timeout] = rest;
        const res = await client.invokeDeviceMethod(device, {
          methodName, payload: JSON.parse(payload), responseTimeoutInSeconds: Number(timeout),
        });
        emit({ step: op, outcome: 'resolved', status: res.result.status, payload: res.result.payload });
      } else if (op === 'getTwin') {
        const res = await registry.getTwin(device);
        const t = res.responseBody;
        emit({ step: op, outcome: 'resolved', etag: t.etag, desired: t.properties.desired, reported: t.properties.reported, tags: t.tags, deviceStatus: t.status, connectionState: t.connectionState });
      } else if (op === 'updateTwin') {
        const [patch, etag] = rest;
        const res = await registry.updateTwin(device, JSON.parse(patch), etag);
        const t = res.responseBody;
        emit({ step: op, outcome: 'resolved', etag: t.etag, desired: t.properties.desired, tags: t.tags });
      } else {
        emit({ step: op, outcome: 'unknown step' });
      }
    } catch (err) {
      emit({ step: op, outcome: 'rejected', error: describe(err) });
    }
  }
}

main().catch((err) => {
  emit({ step: 'main', outcome: 'rejected', error: describe(err) });
  process.exit(3);
});
