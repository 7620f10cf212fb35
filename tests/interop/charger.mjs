#!/usr/bin/env node
// A charger written against ocpp-rpc in strict mode (every frame either way is checked against the
// official OCPP 1.6J or 2.0.1 JSON schemas the package bundles), playing one whole visit against the
// gateway and answering whatever the gateway asks. It prints one JSON line per step and a summary
// line last; it exits 1 on any schema error, any CALLERROR from the gateway, any missing answer or a
// lost connection, and 2 on bad usage. The charger's state and its answers are in device.mjs.
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import rpc from 'ocpp-rpc';  // a CommonJS package: its errors are not named exports
import { Device } from './device.mjs';

const { RPCClient, TimeoutError, createRPCError } = rpc;

const USAGE = 'usage: node charger.mjs --url ws://127.0.0.1:PORT/ocpp --id CP01 --protocol ocpp1.6|ocpp2.0.1 ' +
    '[--password P] [--connectors 1] [--connector 1] [--samples 3] [--interval-ms 1000] [--lease-wait-s 20] [--call-timeout-s 10] ' +
    '[--settle-ms 1500] [--deadline-s 120]';
const TAG = 'INTEROP0001';

const NUMBERS = { connectors: '1', connector: '1', samples: '3', 'interval-ms': '1000', 'lease-wait-s': '20',
    'call-timeout-s': '10', 'settle-ms': '1500', 'deadline-s': '120' };
let opts;
try {
    const { values } = parseArgs({ options: {
        url: { type: 'string' }, id: { type: 'string' }, protocol: { type: 'string' }, password: { type: 'string' },
        ...Object.fromEntries(Object.entries(NUMBERS).map(([k, v]) => [k, { type: 'string', default: v }])),
    } });
    if (!values.url || !values.id || !['ocpp1.6', 'ocpp2.0.1'].includes(values.protocol)) {
        throw new Error('--url, --id and --protocol are needed');
    }
    opts = { ...values };
    for (const k of Object.keys(NUMBERS)) {
        opts[k] = Number(values[k]);
        if (!Number.isInteger(opts[k]) || opts[k] < 0) throw new Error(`--${k} must be a whole number, not ${values[k]}`);
    }
    if (opts.connector < 1 || opts.connector > opts.connectors) throw new Error('--connector must be 1 to --connectors');
} catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    process.exit(2);
}
const V16 = opts.protocol === 'ocpp1.6';
const connectors = opts.connectors;  // the charger's connectors (2.0.1: EVSEs)
const connector = opts.connector;  // the one the car uses

// ---- what the run found, printed line by line and summed up at the end -------------------------

const report = { protocol: opts.protocol, charger: opts.id, steps: 0, received: {}, errors: [] };
const schemaErrors = new Set();  // errors already reported as schema failures, not to count twice
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');
function problem(kind, detail) {
    report.errors.push({ kind, ...detail });
    out({ kind: 'error', error: kind, ...detail });
}

// ---- the charger: its state and answers (device.mjs) ---------------------------------------------

// Follow-ups of a TriggerMessage go out after its answer, as on a real charger.
const device = new Device({
    v16: V16, connectors, connector,
    later: (action, build) => setImmediate(() => step(action, build(), 'triggered').catch(() => {})),
});
const now = () => new Date().toISOString();

// ---- the connection ---------------------------------------------------------------------------------

const client = new RPCClient({
    endpoint: opts.url, identity: opts.id, protocols: [opts.protocol], strictMode: true,
    ...(opts.password ? { password: opts.password } : {}),
    callTimeoutMs: opts['call-timeout-s'] * 1000, reconnect: false,
});
let leaving = false;

client.on('strictValidationFailure', (e) => {
    schemaErrors.add(e.error);
    const direction = e.outbound ? (e.isCall ? 'charger call' : 'charger answer') : (e.isCall ? 'gateway call' : 'gateway answer');
    problem('schema', { direction, action: e.method, message: e.error.message, params: e.params, result: e.result });
});
client.on('badMessage', (e) => problem('bad frame', { message: e.error.message, frame: e.buffer.toString().slice(0, 500) }));
client.on('disconnect', ({ code, reason }) => { if (!leaving) problem('disconnected', { code, reason: String(reason) }); });

for (const [action, answer] of Object.entries(device.handlers())) {
    client.handle(action, ({ params }) => {
        report.received[action] = (report.received[action] ?? 0) + 1;
        try {
            const result = answer(params);
            out({ kind: 'received', action, params, answer: result });
            return result;
        } catch (err) {  // a payload valid by the schema that this charger cannot make sense of
            problem('handler failed', { action, params, message: err.message });
            throw err;
        }
    });
}
client.handle(({ method, params }) => {
    report.received[method] = (report.received[method] ?? 0) + 1;
    out({ kind: 'received', action: method, params, answer: 'NotSupported' });
    throw createRPCError('NotSupported', `this charger does not do ${method}`);
});

/** One call of the visit: printed, and any failure to get a valid answer reported and thrown. */
async function step(action, params, why = 'visit') {
    const t0 = performance.now();
    const n = ++report.steps;
    try {
        const answer = await client.call(action, params);
        out({ kind: 'step', n, why, action, ms: Math.round(performance.now() - t0), answer });
        return answer;
    } catch (err) {
        if (!schemaErrors.has(err)) {
            if (err instanceof TimeoutError) problem('no answer', { action, after_ms: Math.round(performance.now() - t0) });
            else if (err.rpcErrorCode) problem('callerror', { action, code: err.rpcErrorCode, message: err.message, details: err.details });
            else problem('call failed', { action, message: err.message });
        }
        throw err;
    }
}

// ---- the visits ---------------------------------------------------------------------------------------

/** Meter values while charging: at least `samples`, and until a lease for the transaction came in. */
async function charging(send) {
    const waitUntil = Date.now() + opts['lease-wait-s'] * 1000;
    for (let n = 0; ; n++) {
        const leased = device.profiles.some(p => p.purpose === 'TxProfile' && p.transactionId === device.tx.id);
        if (n >= opts.samples && (leased || Date.now() >= waitUntil)) return;
        await sleep(opts['interval-ms']);
        await send(n);
    }
}

async function visit16() {
    const boot = await step('BootNotification', {
        chargePointVendor: 'ocpp-rpc interop', chargePointModel: 'strict-charger', firmwareVersion: '2.2.1',
    });
    if (boot.status !== 'Accepted') problem('boot refused', { status: boot.status });
    const notify = async (s) => {
        device.status.set(connector, s);
        await step('StatusNotification', { connectorId: connector, errorCode: 'NoError', status: s, timestamp: now() });
    };
    for (const [c, s] of device.status) await step('StatusNotification', { connectorId: c, errorCode: 'NoError', status: s });
    await step('Heartbeat', {});
    const auth = await step('Authorize', { idTag: TAG });
    if (auth.idTagInfo.status !== 'Accepted') problem('tag refused', { status: auth.idTagInfo.status });
    await notify('Preparing');
    const meterStart = device.registerWh();
    const started = await step('StartTransaction', { connectorId: connector, idTag: TAG, meterStart, timestamp: now() });
    device.startTransaction(started.transactionId, meterStart);
    await notify('Charging');
    await charging(() => step('MeterValues', {
        connectorId: connector, transactionId: device.tx.id, meterValue: device.meterValue(),
    }));
    report.transactionId = device.tx.id;
    report.energyWh = device.stopTransaction();
    const transactionData = device.meterValue('Transaction.End');  // after the stop: the register is meterStop
    await step('StopTransaction', {
        transactionId: report.transactionId, idTag: TAG, meterStop: meterStart + report.energyWh, timestamp: now(),
        reason: 'EVDisconnected', transactionData,
    });
    await notify('Finishing');
    await notify('Available');
}

async function visit201() {
    const evse = { id: connector, connectorId: 1 };
    const boot = await step('BootNotification', {
        reason: 'PowerUp', chargingStation: { model: 'strict-charger', vendorName: 'ocpp-rpc interop', firmwareVersion: '2.2.1' },
    });
    if (boot.status !== 'Accepted') problem('boot refused', { status: boot.status });
    const notify = async (s) => {
        device.status.set(connector, s);
        await step('StatusNotification', { timestamp: now(), connectorStatus: s, evseId: connector, connectorId: 1 });
    };
    let eventId = 0;
    const event = (actualValue) => step('NotifyEvent', { generatedAt: now(), seqNo: 0, tbc: false, eventData: [{
        eventId: ++eventId, timestamp: now(), trigger: 'Delta', actualValue, eventNotificationType: 'HardWiredNotification',
        component: { name: 'Connector', evse }, variable: { name: 'AvailabilityState' },
    }] });
    for (const [c, s] of device.status) {
        if (c > 0) await step('StatusNotification', { timestamp: now(), connectorStatus: s, evseId: c, connectorId: 1 });
    }
    await step('SecurityEventNotification', { type: 'StartupOfTheDevice', timestamp: now(), techInfo: 'interop run' });
    await step('Heartbeat', {});
    const idToken = { idToken: TAG, type: 'ISO14443' };
    const auth = await step('Authorize', { idToken });
    if (auth.idTokenInfo.status !== 'Accepted') problem('tag refused', { status: auth.idTokenInfo.status });
    await notify('Occupied');
    await event('Occupied');
    const tx = { id: randomUUID(), seqNo: 0 };
    const txEvent = (eventType, triggerReason, info, extra) => step('TransactionEvent', {
        eventType, timestamp: now(), triggerReason, seqNo: tx.seqNo++, transactionInfo: { transactionId: tx.id, ...info }, ...extra,
    });
    const begin = device.energyOnly('Transaction.Begin');  // read before the car draws: the start exactly
    device.startTransaction(tx.id, begin[0].sampledValue[0].value);
    await txEvent('Started', 'Authorized', { chargingState: 'EVConnected' }, { idToken, evse, meterValue: begin });
    await txEvent('Updated', 'ChargingStateChanged', { chargingState: 'Charging' }, {});
    await charging(async (n) => {
        await txEvent('Updated', 'MeterValuePeriodic', {}, { meterValue: device.meterValue() });
        if (n === 0) await step('MeterValues', { evseId: connector, meterValue: device.meterValue() });
    });
    report.transactionId = tx.id;
    report.energyWh = device.stopTransaction();
    const end = device.energyOnly('Transaction.End');  // after the stop: the register the energy counts to
    await txEvent('Ended', 'EVCommunicationLost', { chargingState: 'Idle', stoppedReason: 'EVDisconnected' }, { meterValue: end });
    report.transactionEvents = tx.seqNo;
    await notify('Available');
    await event('Available');
    await step('Heartbeat', {});
}

// ---- main ---------------------------------------------------------------------------------------------

function finish() {
    report.profiles = device.received;
    report.localList = { version: device.localListVersion, entries: device.localList.size };
    report.ok = report.errors.length === 0;
    out({ kind: 'summary', ...report });
    process.stdout.write('', () => process.exit(report.ok ? 0 : 1));
}

const deadline = setTimeout(() => { problem('deadline', { seconds: opts['deadline-s'] }); finish(); },
    opts['deadline-s'] * 1000);
try {
    const { response } = await client.connect();
    out({ kind: 'step', n: 0, why: 'visit', action: 'connect', protocol: client.protocol, http: response?.statusCode ?? 101 });
    await (V16 ? visit16() : visit201());
    // The gateway may still be taking back the lease or asking things: answer them before leaving.
    await sleep(opts['settle-ms']);
} catch (err) {
    if (report.errors.length === 0) problem('visit failed', { message: err.message });
}
leaving = true;
await client.close({ code: 1000, reason: 'visit over' }).catch(() => {});
clearTimeout(deadline);
finish();
