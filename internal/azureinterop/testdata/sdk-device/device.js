// A device built on Azure's official Node.js device SDK (azure-iot-device + azure-iot-device-mqtt),
// driven by internal/azureinterop's Go test against a real c2d-hub. It uses the SDK exactly as an
// application would: Client.fromConnectionString, setOptions({ca}), open, on('message'),
// complete/reject/abandon, close. It never disables TLS verification.
//
// Environment:
//   C2D_DEVICE_CONNECTION_STRING  HostName=...;DeviceId=...;SharedAccessKey=... (or SharedAccessSignature=...)
//   C2D_CA_FILE                   PEM the hub's certificate chains to (DATA/tls/ca.pem)
//   C2D_TRANSPORT                 mqtt (default) | mqttws
//   C2D_WSS_ADDR                  mqttws only: host:port of the hub's --wss listener (see wsAgent)
//   C2D_SETTLE                    complete (default) | reject | abandon | none
//   C2D_SEND_EVENT                1: once open, send one device-to-cloud event (client.sendEvent)
//   C2D_METHODS                   1: once open, register direct-method handlers (client.onDeviceMethod):
//                                 echo answers 201 with {"got": payload}; fail answers 409 with a string
//   C2D_TWIN                      1: once open, getTwin, listen for desired changes, and report what
//                                 each stdin line (a JSON patch) says; "get" on stdin reads the twin again
//   C2D_TOKEN_RENEWAL             optional "valid,margin" seconds: SharedAccessKeyAuthenticationProvider's
//                                 tokenValidTimeInSeconds and tokenRenewalMarginInSeconds (SDK default
//                                 3600,900: a new token, and a reconnect, every 45 minutes)
//
// stdout: one JSON object per line, {"event": ...}: open, open_error, sent, message, settled,
// method, method_answered, closed, disconnect, error. The process closes the client and exits 0 when stdin reaches EOF (the test's
// way of taking the device offline), 1 when open fails.
'use strict';

const fs = require('fs');
const https = require('https');
const tls = require('tls');
const { Client, Message, SharedAccessKeyAuthenticationProvider } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(err) {
  if (!err) return null;
  const out = { name: err.name || (err.constructor && err.constructor.name), message: String(err.message || err) };
  if (err.transportError) {
    out.transportError = { message: String(err.transportError.message), code: err.transportError.code };
  }
  return out;
}

function isoOrInvalid(d) {
  return isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString();
}

// The SDK dials wss://{GatewayHostName or HostName}:443/$iothub/websocket with no way to change the
// port, but it passes options.mqtt.webSocketAgent to the WebSocket (its documented hook for
// proxies). This agent keeps the URL — so the Host header, SNI and certificate check stay
// "localhost" — and only dials the hub's test listener instead of port 443.
function wsAgent(addr, ca) {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i);
  const port = Number(addr.slice(i + 1));
  const agent = new https.Agent({ ca });
  agent.createConnection = (opts, cb) => {
    const sock = tls.connect({ ...opts, host, port, servername: opts.servername || opts.host, ca });
    if (cb) sock.once('secureConnect', () => cb(null, sock));
    return sock;
  };
  return agent;
}

async function main() {
  const cs = process.env.C2D_DEVICE_CONNECTION_STRING;
  const ca = fs.readFileSync(process.env.C2D_CA_FILE, 'utf8');
  const transport = process.env.C2D_TRANSPORT || 'mqtt';
  const settle = process.env.C2D_SETTLE || 'complete';

  const Transport = transport === 'mqttws' ? MqttWs : Mqtt;
  let client;
  if (process.env.C2D_TOKEN_RENEWAL) {
    const [valid, margin] = process.env.C2D_TOKEN_RENEWAL.split(',').map(Number);
    client = Client.fromAuthenticationProvider(
      SharedAccessKeyAuthenticationProvider.fromConnectionString(cs, valid, margin), Transport);
  } else {
    client = Client.fromConnectionString(cs, Transport);
  }
  const options = { ca };
  if (transport === 'mqttws') {
    options.mqtt = { webSocketAgent: wsAgent(process.env.C2D_WSS_ADDR, ca) };
  }
  await client.setOptions(options);

  client.on('error', (err) => emit({ event: 'error', error: describeError(err) }));
  client.on('disconnect', (err) => emit({ event: 'disconnect', error: describeError(err) }));
  try {
    const res = await client.open();
    emit({ event: 'open', result: res && res.constructor ? res.constructor.name : String(res) });
  } catch (err) {
    emit({ event: 'open_error', error: describeError(err) });
    process.exit(1);
  }

  // As in Azure's own samples: listen once open. Adding the listener makes the SDK subscribe to
  // devices/{id}/messages/devicebound/# (QoS 1); the hub then delivers what it queued meanwhile.
  client.on('message', (msg) => {
    const properties = [];
    for (let i = 0; i < msg.properties.count(); i++) {
      const p = msg.properties.getItem(i);
      properties.push({ name: p.key, value: p.value });
    }
    // The SDK has no field for iothub-ack: it lands among the properties (as with a real Azure
    // IoT Hub). Report it separately too, as an application would read it.
    const ackProp = properties.find((p) => p.name === 'iothub-ack');
    emit({
      event: 'message',
      messageId: msg.messageId,
      correlationId: msg.correlationId,
      userId: msg.userId,
      to: msg.to,
      expiryTimeUtc: msg.expiryTimeUtc,
      // What an application gets from the usual JavaScript parse of Azure's 7-digit fraction.
      expiryParsed: msg.expiryTimeUtc ? isoOrInvalid(new Date(msg.expiryTimeUtc)) : undefined,
      contentType: msg.contentType,
      contentEncoding: msg.contentEncoding,
      ack: msg.ack !== undefined ? msg.ack : (ackProp ? ackProp.value : undefined),
      properties,
      body: Buffer.from(msg.getBytes()).toString('base64'),
    });
    if (settle === 'none') return;
    // Settle the way an application would, and record how the SDK answers: a result, a rejected
    // promise, or an exception thrown synchronously.
    let p;
    try {
      p = client[settle](msg);
    } catch (err) {
      emit({ event: 'settled', op: settle, messageId: msg.messageId, outcome: 'threw', error: describeError(err) });
      return;
    }
    Promise.resolve(p).then(
      (res) => emit({ event: 'settled', op: settle, messageId: msg.messageId, outcome: 'resolved', result: res && res.constructor ? res.constructor.name : String(res) }),
      (err) => emit({ event: 'settled', op: settle, messageId: msg.messageId, outcome: 'rejected', error: describeError(err) }),
    );
  });


  if (process.env.C2D_METHODS === '1') {
    // As Azure's samples do: one handler per method name; the SDK subscribes to
    // $iothub/methods/POST/# and answers on $iothub/methods/res/{status}/?$rid=.
    const handler = (status, answer) => (request, response) => {
      emit({ event: 'method', methodName: request.methodName, payload: request.payload, requestId: request.requestId });
      response.send(status, answer(request.payload), (err) => {
        emit({ event: 'method_answered', methodName: request.methodName, outcome: err ? 'rejected' : 'resolved', error: describeError(err) });
      });
    };
    client.onDeviceMethod('echo', handler(201, (payload) => ({ got: payload })));
    client.onDeviceMethod('fail', handler(409, () => 'relay1 is busy'));
  }

  let twin;
  if (process.env.C2D_TWIN === '1') {
    try {
      twin = await client.getTwin();
      emit({ event: 'twin', desired: twin.properties.desired, reported: twin.properties.reported });
    } catch (err) {
      emit({ event: 'twin_error', error: describeError(err) });
    }
    if (twin) {
      twin.on('properties.desired', (delta) => emit({ event: 'desired', delta }));
      const rl = require('readline').createInterface({ input: process.stdin });
      rl.on('line', (line) => {
        if (line.trim() === 'get') {
          twin.get((err, t) => {
            if (err) emit({ event: 'twin_error', error: describeError(err) });
            else emit({ event: 'twin', desired: t.properties.desired, reported: t.properties.reported });
          });
          return;
        }
        twin.properties.reported.update(JSON.parse(line), (err) => {
          emit({ event: 'reported', outcome: err ? 'rejected' : 'resolved', error: describeError(err) });
        });
      });
    }
  }

  if (process.env.C2D_SEND_EVENT === '1') {
    // Telemetry, as nearly every SDK application sends: c2d-hub accepts it (PUBACK) and drops it.
    const ev = new Message(JSON.stringify({ temperature: 21.5 }));
    ev.messageId = 'telemetry-1';
    ev.contentType = 'application/json';
    ev.contentEncoding = 'utf-8';
    ev.properties.add('kind', 'temperature');
    try {
      const res = await client.sendEvent(ev);
      emit({ event: 'sent', outcome: 'resolved', result: res && res.constructor ? res.constructor.name : String(res) });
    } catch (err) {
      emit({ event: 'sent', outcome: 'rejected', error: describeError(err) });
    }
  }

  process.stdin.resume();
  process.stdin.on('end', async () => {
    try {
      await client.close();
      emit({ event: 'closed' });
      process.exit(0);
    } catch (err) {
      emit({ event: 'error', error: describeError(err) });
      process.exit(2);
    }
  });
}

main().catch((err) => {
  emit({ event: 'error', error: describeError(err) });
  process.exit(3);
});
