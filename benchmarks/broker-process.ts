/**
 * The AMQP test broker in its own process, so that a benchmark measures the client side only:
 *   tsx benchmarks/broker-process.ts <queues> [delayMs]
 * prints {"port":N} on stdout once it listens; messages are counted, not kept.
 */
import { TestBroker } from '../test/support/asb-broker.js';

const queues = Number(process.argv[2] ?? 1);
const delayMs = Number(process.argv[3] ?? 0);
const broker = await TestBroker.start({ keepMessages: false });
broker.faults.delayMs = {};
for (let i = 0; i < queues; i++) {
  const name = `T${i}_cdc_events`;
  broker.createQueue(name);
  if (delayMs > 0) broker.faults.delayMs[name.toLowerCase()] = delayMs;
}
process.stdout.write(`${JSON.stringify({ port: broker.port })}\n`);
process.on('SIGTERM', () => void broker.close().then(() => process.exit(0)));
