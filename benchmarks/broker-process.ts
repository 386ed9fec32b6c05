/**
 * The AMQP test broker in its own process, so that a benchmark measures the client side only:
 *   tsx benchmarks/broker-process.ts <queues | name,name,...> [delayMs]
 * prints {"port":N} on stdout once it listens; messages are counted, not kept.
 */
import { TestBroker } from '../test/support/asb-broker.js';

// A number of queues T0..Tn-1, or their names, comma-separated.
const names = /^\d+$/.test(process.argv[2] ?? '1') ? Array.from({ length: Number(process.argv[2] ?? 1) }, (_, i) => `T${i}_cdc_events`) : process.argv[2]!.split(',');
const delayMs = Number(process.argv[3] ?? 0);
const broker = await TestBroker.start({ keepMessages: false });
broker.faults.delayMs = {};
for (const name of names) {
  broker.createQueue(name);
  if (delayMs > 0) broker.faults.delayMs[name.toLowerCase()] = delayMs;
}
process.stdout.write(`${JSON.stringify({ port: broker.port })}\n`);
process.on('SIGTERM', () => void broker.close().then(() => process.exit(0)));
