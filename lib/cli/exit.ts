/**
 * Exit once stdout and stderr have drained. process.exit() right after a write to a pipe drops
 * what is still queued (stderr into a pipe is asynchronous), so a long error lost its end, its
 * most useful line.
 */
export function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  // A stream that never calls back (a reader that went away) cannot hold the exit: the unref'd
  // timer lets the process end by itself with exitCode once nothing else is pending.
  setTimeout(() => process.exit(code), 10_000).unref();
  let pending = 2;
  const done = () => {
    if (--pending === 0) process.exit(code);
  };
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.destroyed || stream.writableEnded) done();
    else stream.write('', done);
  }
}
