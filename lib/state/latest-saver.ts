/**
 * Saves only the latest of values that come faster than a durable save: while one save runs, newer
 * values replace each other, and the next save writes the newest. The store never lags more than one
 * save behind, never holds a value that was not offered, and memory stays at one pending value
 * however far the saves fall behind (the executor's task store and asb-sink's --state-file).
 */
export interface LatestSaver<T> {
  /** Offers a value; throws the error of an earlier failed save. */
  offer(value: T): void;
  /** Waits until the latest offered value is saved; throws a save's error. */
  flush(): Promise<void>;
}

export function latestSaver<T>(save: (value: T) => Promise<void>): LatestSaver<T> {
  let latest: { value: T } | undefined;
  let saving: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;
  const run = (): Promise<void> =>
    (saving ??= (async () => {
      while (latest !== undefined) {
        const { value } = latest;
        latest = undefined;
        await save(value);
      }
    })()
      .catch((error: unknown) => {
        failure ??= { error };
      })
      .finally(() => (saving = undefined)));
  return {
    offer(value) {
      if (failure !== undefined) throw failure.error;
      latest = { value };
      void run();
    },
    async flush() {
      while (saving !== undefined || (latest !== undefined && failure === undefined)) await run();
      if (failure !== undefined) throw failure.error;
    },
  };
}
