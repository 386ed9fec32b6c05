/**
 * The login sequence (MS-TDS 2.2.6.5 PRELOGIN, 2.2.6.4 LOGIN7, 3.3.5.1-3.3.5.3): the PRELOGIN
 * answer and the decoding of a LOGIN7 message, password obfuscation included.
 */
import { ByteWriter } from './bytes.js';
import { PRODUCT_VERSION } from './tokens.js';

/** PRELOGIN option tokens and ENCRYPTION values. */
const OPT = { VERSION: 0x00, ENCRYPTION: 0x01, INSTOPT: 0x02, THREADID: 0x03, MARS: 0x04, FEDAUTHREQUIRED: 0x06, TERMINATOR: 0xff } as const;
export const ENCRYPT = { OFF: 0x00, ON: 0x01, NOT_SUP: 0x02, REQ: 0x03 } as const;

export interface Prelogin {
  encryption: number | undefined;
  options: Map<number, Buffer>;
}

export function parsePrelogin(payload: Buffer): Prelogin {
  const options = new Map<number, Buffer>();
  for (let at = 0; at < payload.length && payload[at] !== OPT.TERMINATOR; at += 5) {
    if (at + 5 > payload.length) throw new RangeError('PRELOGIN option list has no terminator');
    const offset = payload.readUInt16BE(at + 1);
    const length = payload.readUInt16BE(at + 3);
    if (offset + length > payload.length) throw new RangeError('PRELOGIN option points past the message');
    options.set(payload[at]!, payload.subarray(offset, offset + length));
  }
  return { encryption: options.get(OPT.ENCRYPTION)?.[0], options };
}

/** The server's PRELOGIN response: its version, the encryption it settles on, no instance, no MARS. */
export function preloginResponse(encryption: number): Buffer {
  const version = Buffer.alloc(6);
  version[0] = PRODUCT_VERSION.major;
  version[1] = PRODUCT_VERSION.minor;
  version.writeUInt16BE(PRODUCT_VERSION.build, 2);
  const options: [number, Buffer][] = [
    [OPT.VERSION, version],
    [OPT.ENCRYPTION, Buffer.from([encryption])],
    [OPT.INSTOPT, Buffer.from([0])],
    [OPT.THREADID, Buffer.alloc(0)],
    [OPT.MARS, Buffer.from([0])],
  ];
  const w = new ByteWriter(128);
  let dataOffset = options.length * 5 + 1;
  for (const [token, data] of options) {
    w.u8(token);
    w.ensure(4);
    w.pos = w.buf.writeUInt16BE(dataOffset, w.pos);
    w.pos = w.buf.writeUInt16BE(data.length, w.pos);
    dataOffset += data.length;
  }
  w.u8(OPT.TERMINATOR);
  for (const [, data] of options) w.bytes(data);
  return Buffer.from(w.buf.subarray(0, w.pos));
}

export interface Login7 {
  tdsVersion: number;
  packetSize: number;
  hostName: string;
  user: string;
  password: string;
  appName: string;
  serverName: string;
  language: string;
  database: string;
  integratedSecurity: boolean;
}

/** MS-TDS 2.2.6.4: each byte of the password had its nibbles swapped, then was XORed with 0xA5. */
function unscramble(b: Buffer): string {
  const out = Buffer.allocUnsafe(b.length);
  for (let i = 0; i < b.length; i++) {
    const x = b[i]! ^ 0xa5;
    out[i] = ((x & 0x0f) << 4) | (x >> 4);
  }
  return out.toString('ucs2');
}

export function parseLogin7(msg: Buffer): Login7 {
  if (msg.length < 94) throw new RangeError(`LOGIN7 of ${msg.length} bytes is shorter than its fixed part`);
  const field = (at: number): Buffer => {
    const offset = msg.readUInt16LE(at);
    const chars = msg.readUInt16LE(at + 2);
    if (offset + chars * 2 > msg.length) throw new RangeError('LOGIN7 field points past the message');
    return msg.subarray(offset, offset + chars * 2);
  };
  const text = (at: number) => field(at).toString('ucs2');
  return {
    tdsVersion: msg.readUInt32LE(4),
    packetSize: msg.readUInt32LE(8),
    integratedSecurity: (msg[25]! & 0x80) !== 0,
    hostName: text(36),
    user: text(40),
    password: unscramble(field(44)),
    appName: text(48),
    serverName: text(52),
    language: text(64),
    database: text(68),
  };
}
