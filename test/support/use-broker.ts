/** A fresh AMQP test broker for each test of a file; no errors inside the broker allowed. */
import { afterEach, beforeEach, expect } from 'vitest';
import { TestBroker } from './asb-broker.js';

/** Registers the hooks (`setup` prepares each new broker); the returned function gives the current test's broker. */
export function useBroker(setup?: (broker: TestBroker) => void): () => TestBroker {
  let broker: TestBroker | undefined;
  beforeEach(async () => {
    broker = await TestBroker.start();
    setup?.(broker);
  });
  afterEach(async () => {
    await broker!.close();
    expect(broker!.errors).toEqual([]);
  });
  return () => broker!;
}
