/**
 * Saves only the latest of values that come faster than a durable save: while one save runs, newer
 * values replace each other, and the next save writes the newest. The store never lags more than one
 * save (and `minIntervalMs`) behind, never holds a value that was not offered, and memory stays at
 * one pending value however far the saves fall behind (the executor's task store and asb-sink's
 * --state-file).
 */
export interface LatestSaver<T> {
  /** Offers a value; throws the error of an earlier failed save. */
  offer(value: T): void;
  /** Waits until the latest offered value is saved (at once, not after `minIntervalMs`); throws a save's error. */
  flush(): Promise<void>;
}

export interface LatestSaverOptions {
  /**
   * Least time from the start of one save to the start of the next, so that saves (each with its
   * fsyncs) do not compete with the output's own writes for the disk all run long. The first save
   * and a flush do not wait. Default 0.
   */
  minIntervalMs?: number;
}

export function latestSaver<T>(save: (value: T) => Promise<void>, options: LatestSaverOptions = {}): LatestSaver<T> {
  const gap = options.minIntervalMs ?? 0;
  let latest: { value: T } | undefined;
  let saving: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;
  let lastStart = Number.NEGATIVE_INFINITY;
  let flushing = 0;
  // Ends the wait between saves early (a flush).
  let hurry: (() => void) | undefined;
  const pause = async () => {
    const wait = lastStart + gap - Date.now();
    if (wait <= 0 || flushing > 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      hurry = resolve;
      timer = setTimeout(resolve, wait);
    });
    clearTimeout(timer);
    hurry = undefined;
  };
  const run = (): Promise<void> =>
    (saving ??= (async () => {
      while (latest !== undefined) {
        await pause();
        const { value } = latest;
        latest = undefined;
        lastStart = Date.now();
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
      flushing++;
      try {
        hurry?.();
        while (saving !== undefined || (latest !== undefined && failure === undefined)) await run();
      } finally {
        flushing--;
      }
      if (failure !== undefined) throw failure.error;
    },
  };
}
