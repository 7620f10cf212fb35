// The charger itself, for charger.mjs: its connectors' statuses, the charging profiles, settings and
// local list the gateway gave it, a car drawing what the profile in force allows and the meter that
// counts it, and its answers to every call the gateway may send (OCPP 1.6J or 2.0.1 shapes).

const VOLTAGE_V = 230;
const CAR_MAX_A = 16;  // what the car itself takes at most, per phase
const MIN_CURRENT_A = 6;  // IEC 61851: below this a car does not charge
const NO_PROFILE_A = 32;  // what the charger gives without any profile: its maximum

const now = () => new Date().toISOString();

export class Device {
    /**
     * @param {object} o
     * @param {boolean} o.v16 - OCPP 1.6J shapes, else 2.0.1
     * @param {number} o.connectors - connectors (2.0.1: EVSEs)
     * @param {number} o.connector - the one the car uses
     * @param {(action: string, build: () => object) => void} o.later - send a message after the current answer
     */
    constructor({ v16, connectors, connector, later }) {
        this.v16 = v16;
        this.connectors = connectors;
        this.connector = connector;
        this.later = later;
        this.status = new Map(Array.from({ length: connectors + 1 }, (_, c) => [c, 'Available']));  // 0: the charger
        this.profiles = [];  // in force: {connector, id, stackLevel, purpose, kind, transactionId, limitA, periods, ...}
        this.received = [];  // every profile the gateway sent, in order
        this.config16 = new Map([  // key -> [value, readonly]
            ['MeterValueSampleInterval', ['60', false]],
            ['MeterValuesSampledData', ['Energy.Active.Import.Register', false]],
            ['ConnectorPhaseRotation', [[...this.status.keys()].map(c => `${c}.RST`).join(','), false]],
            ['HeartbeatInterval', ['300', false]],
            ['NumberOfConnectors', [String(connectors), true]],
            ['LocalAuthListEnabled', ['true', false]],
            ['LocalAuthListMaxLength', ['1000', true]],
            ['SendLocalListMaxLength', ['100', true]],
        ]);
        this.variables201 = new Map([  // "Component.Variable" -> value
            ['SampledDataCtrlr.TxUpdatedInterval', '60'],
            ['SampledDataCtrlr.TxUpdatedMeasurands', 'Energy.Active.Import.Register'],
            ['SampledDataCtrlr.TxStartedMeasurands', 'Energy.Active.Import.Register'],
            ['SampledDataCtrlr.TxEndedMeasurands', 'Energy.Active.Import.Register'],
            ['AlignedDataCtrlr.Interval', '900'],
            ['AlignedDataCtrlr.Measurands', 'Energy.Active.Import.Register'],
            ['OCPPCommCtrlr.HeartbeatInterval', '300'],
            ['LocalAuthListCtrlr.Enabled', 'true'],
            ['LocalAuthListCtrlr.Entries', '0'],
            ['LocalAuthListCtrlr.ItemsPerMessage', '100'],
            ['LocalAuthListCtrlr.BytesPerMessage', '65000'],
            ['SmartChargingCtrlr.Enabled', 'true'],
            ['EVSE.PhaseRotation', 'RST'],
        ]);
        this.localListVersion = 0;
        this.localList = new Map();  // tag -> its status, as the gateway pushed it
        this.energyWh = 12000;  // the meter's register: a charger is never new
        this.meterAt = Date.now();
        this.tx = null;  // the running transaction: {id (1.6 number, 2.0.1 string), seqNo, startWh}
    }

    // ---- the car and the meter --------------------------------------------------------------------

    /** The energy register now (whole Wh). */
    registerWh() {
        this.drawA();
        return Math.floor(this.energyWh);
    }

    /** A transaction starts (the car may draw from now on) at the register `startWh`. */
    startTransaction(id, startWh) {
        this.drawA();  // the register up to now, at no draw
        this.tx = { id, seqNo: 0, startWh };
    }

    /** The transaction ends: the energy it took (Wh). */
    stopTransaction() {
        const energyWh = this.registerWh() - this.tx.startWh;
        this.tx = null;
        return energyWh;
    }

    /** The limit in force on the car's connector (A per phase): a TxProfile of the running transaction,
     * else the connector's TxDefaultProfile, else one for the whole charger; the highest stack level wins. */
    limitA() {
        const ranked = (purpose, where) => this.profiles
            .filter(p => p.purpose === purpose && where(p))
            .sort((a, b) => b.stackLevel - a.stackLevel)[0];
        const best = (this.tx && ranked('TxProfile', p => p.transactionId === this.tx.id))
            || ranked('TxDefaultProfile', p => p.connector === this.connector)
            || ranked('TxDefaultProfile', p => p.connector === 0);
        return best ? best.limitA : NO_PROFILE_A;
    }

    /** The car's draw per phase (A) under the limit in force, with the register brought up to now. */
    drawA() {
        const limit = this.limitA();
        const a = !this.tx || limit < MIN_CURRENT_A ? 0 : Math.min(CAR_MAX_A, limit);
        const t = Date.now();
        this.energyWh += (3 * VOLTAGE_V * a) * (t - this.meterAt) / 3.6e6;
        this.meterAt = t;
        return a;
    }

    /** One sampled value: 1.6 has string values and a unit, 2.0.1 numbers and a unitOfMeasure. */
    sv(context, measurand, value, unit, phase) {
        return {
            value: this.v16 ? String(value) : value, context, measurand,
            ...(this.v16 ? { unit } : { unitOfMeasure: { unit } }), ...(phase ? { phase } : {}),
        };
    }

    /** A meterValue list: current per phase, power and the energy register. */
    meterValue(context = 'Sample.Periodic') {
        const a = this.drawA();
        return [{ timestamp: now(), sampledValue: [
            ...['L1', 'L2', 'L3'].map(ph => this.sv(context, 'Current.Import', a, 'A', ph)),
            this.sv(context, 'Power.Active.Import', Math.round(3 * VOLTAGE_V * a), 'W'),
            this.sv(context, 'Energy.Active.Import.Register', Math.floor(this.energyWh), 'Wh'),
        ] }];
    }

    /** A meterValue list with the energy register only (a transaction's begin and end). */
    energyOnly(context) {
        return [{ timestamp: now(), sampledValue: [this.sv(context, 'Energy.Active.Import.Register', this.registerWh(), 'Wh')] }];
    }

    // ---- what the gateway set ------------------------------------------------------------------------

    /** Keep a charging profile (its first period's limit, in A) the way a charger stacks them. */
    keepProfile(connectorId, p) {
        const plan = this.v16 ? p.chargingSchedule : p.chargingSchedule[0];
        const first = plan.chargingSchedulePeriod[0];
        const limit = plan.chargingRateUnit === 'W' ? first.limit / VOLTAGE_V / (first.numberPhases ?? 3) : first.limit;
        const kept = {
            connector: connectorId, id: p.chargingProfileId ?? p.id, stackLevel: p.stackLevel, purpose: p.chargingProfilePurpose,
            kind: p.chargingProfileKind, transactionId: p.transactionId ?? null, limitA: limit, periods: plan.chargingSchedulePeriod.length,
            startSchedule: plan.startSchedule ?? null, durationS: plan.duration ?? null,
        };
        // One with the same id, or the same stack level and purpose on the connector, replaces the old one.
        const old = this.profiles.findIndex(o => o.id === kept.id
            || (o.connector === connectorId && o.stackLevel === kept.stackLevel && o.purpose === kept.purpose));
        if (old >= 0) this.profiles.splice(old, 1);
        this.profiles.push(kept);
        this.received.push(kept);
        return { status: 'Accepted' };
    }

    clearProfiles(match) {
        const before = this.profiles.length;
        this.profiles = this.profiles.filter(p => !match(p));
        return { status: this.profiles.length < before ? 'Accepted' : 'Unknown' };
    }

    /** Apply a SendLocalList: a Full update replaces the list; an entry without its info is a removal. */
    updateLocalList(version, updateType, entries, tagOf, infoOf) {
        if (updateType === 'Full') this.localList.clear();
        for (const entry of entries ?? []) {
            const info = infoOf(entry);
            if (info) this.localList.set(tagOf(entry), info.status);
            else this.localList.delete(tagOf(entry));
        }
        this.localListVersion = version;
        this.variables201.set('LocalAuthListCtrlr.Entries', String(this.localList.size));
        return { status: 'Accepted' };
    }

    schedule(duration, unit) {
        const limit = this.limitA();
        return { duration, chargingRateUnit: unit || 'A',
            chargingSchedulePeriod: [{ startPeriod: 0, limit: unit === 'W' ? Math.floor(limit * VOLTAGE_V * 3) : limit }] };
    }

    /** TriggerMessage: accept what this charger can send, and send it after the answer. */
    trigger(requestedMessage, which, statusOf, meterValues) {
        if (requestedMessage === 'StatusNotification') {
            for (const c of which) this.later('StatusNotification', () => statusOf(c));
        } else if (requestedMessage === 'Heartbeat') {
            this.later('Heartbeat', () => ({}));
        } else if (requestedMessage === 'MeterValues') {
            this.later('MeterValues', meterValues);
        } else {
            return { status: 'NotImplemented' };
        }
        return { status: 'Accepted' };
    }

    // ---- answers, by action ----------------------------------------------------------------------------

    /** The answer of every call this charger takes from the gateway, in its OCPP version. */
    handlers() {
        return this.v16 ? this.#handlers16() : this.#handlers201();
    }

    #handlers16() {
        const config = this.config16;
        return {
            SetChargingProfile: ({ connectorId, csChargingProfiles }) => this.keepProfile(connectorId, csChargingProfiles),
            ClearChargingProfile: (q) => this.clearProfiles(p => (q.id === undefined || p.id === q.id)
                && (q.connectorId === undefined || p.connector === q.connectorId)
                && (q.chargingProfilePurpose === undefined || p.purpose === q.chargingProfilePurpose)
                && (q.stackLevel === undefined || p.stackLevel === q.stackLevel)),
            ChangeConfiguration: ({ key, value }) => {
                const known = config.get(key);
                if (!known) return { status: 'NotSupported' };
                if (known[1]) return { status: 'Rejected' };
                config.set(key, [value, false]);
                return { status: 'Accepted' };
            },
            GetConfiguration: ({ key }) => {
                const keys = key && key.length ? key : [...config.keys()];
                return {
                    configurationKey: keys.filter(k => config.has(k))
                        .map(k => ({ key: k, readonly: config.get(k)[1], value: config.get(k)[0] })),
                    unknownKey: keys.filter(k => !config.has(k)),
                };
            },
            TriggerMessage: ({ requestedMessage, connectorId }) => this.trigger(
                requestedMessage,
                connectorId === undefined ? [...this.status.keys()] : [connectorId],
                (c) => ({ connectorId: c, errorCode: 'NoError', status: this.status.get(c) ?? 'Unavailable' }),
                () => ({ connectorId: this.connector, ...(this.tx ? { transactionId: this.tx.id } : {}), meterValue: this.meterValue('Trigger') }),
            ),
            GetLocalListVersion: () => ({ listVersion: this.localListVersion }),
            SendLocalList: ({ listVersion, updateType, localAuthorizationList }) =>
                this.updateLocalList(listVersion, updateType, localAuthorizationList, e => e.idTag, e => e.idTagInfo),
            GetCompositeSchedule: ({ connectorId, duration, chargingRateUnit }) => ({
                status: 'Accepted', connectorId, scheduleStart: now(), chargingSchedule: this.schedule(duration, chargingRateUnit),
            }),
        };
    }

    #handlers201() {
        const variables = this.variables201;
        return {
            SetChargingProfile: ({ evseId, chargingProfile }) => this.keepProfile(evseId, chargingProfile),
            ClearChargingProfile: ({ chargingProfileId, chargingProfileCriteria: c = {} }) => this.clearProfiles(p =>
                (chargingProfileId === undefined || p.id === chargingProfileId)
                && (c.evseId === undefined || p.connector === c.evseId)
                && (c.chargingProfilePurpose === undefined || p.purpose === c.chargingProfilePurpose)
                && (c.stackLevel === undefined || p.stackLevel === c.stackLevel)),
            SetVariables: ({ setVariableData }) => ({ setVariableResult: setVariableData.map((item) => {
                const { component, variable, attributeValue, attributeType } = item;
                const name = `${component.name}.${variable.name}`;
                const known = variables.has(name);
                if (known) variables.set(name, attributeValue);
                return { attributeStatus: known ? 'Accepted' : 'UnknownVariable', component, variable, ...(attributeType ? { attributeType } : {}) };
            }) }),
            GetVariables: ({ getVariableData }) => ({ getVariableResult: getVariableData.map(({ component, variable, attributeType }) => {
                const value = variables.get(`${component.name}.${variable.name}`);
                return {
                    attributeStatus: value === undefined ? 'UnknownVariable' : 'Accepted', component, variable,
                    ...(attributeType ? { attributeType } : {}), ...(value === undefined ? {} : { attributeValue: value }),
                };
            }) }),
            TriggerMessage: ({ requestedMessage, evse }) => this.trigger(
                requestedMessage,
                evse ? [evse.id] : [...this.status.keys()].filter(c => c > 0),
                (c) => ({ timestamp: now(), connectorStatus: this.status.get(c) ?? 'Unavailable', evseId: c, connectorId: 1 }),
                () => ({ evseId: this.connector, meterValue: this.meterValue('Trigger') }),
            ),
            GetLocalListVersion: () => ({ versionNumber: this.localListVersion }),
            SendLocalList: ({ versionNumber, updateType, localAuthorizationList }) =>
                this.updateLocalList(versionNumber, updateType, localAuthorizationList, e => e.idToken.idToken, e => e.idTokenInfo),
            GetCompositeSchedule: ({ evseId, duration, chargingRateUnit }) => ({
                status: 'Accepted', schedule: { evseId, scheduleStart: now(), ...this.schedule(duration, chargingRateUnit) },
            }),
        };
    }
}
