/**
 * Container suites run where a container runtime exists and skip, saying why, where none does.
 * `getContainerRuntimeClient()` rejects within milliseconds when there is no runtime.
 */
export async function containerRuntime(): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `no container runtime (${(err as Error).message})` };
  }
}

/** Skips the test with the reason printed, so that a skip is never silent. */
export function skipWith(ctx: { skip: (note?: string) => void }, reason: string): never {
  process.stderr.write(`skipped: ${reason}\n`);
  ctx.skip(reason);
  throw new Error('unreachable: ctx.skip() throws');
}
