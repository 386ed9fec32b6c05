/** A fresh AMQP test broker for each test of a file; no errors inside the broker allowed. */
import { afterEach, beforeEach, expect } from 'vitest';
import { TestBroker } from './asb-broker.js';

/** Registers the hooks; the returned function gives the current test's broker. */
export function useBroker(): () => TestBroker {
  let broker: TestBroker | undefined;
  beforeEach(async () => {
    broker = await TestBroker.start();
  });
  afterEach(async () => {
    await broker!.close();
    expect(broker!.errors).toEqual([]);
  });
  return () => broker!;
}
