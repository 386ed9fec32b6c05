import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Many suites spawn real processes (node start-up is ~0.3 s each, more on a loaded CI machine);
    // a timeout here only guards against a hang, it measures nothing.
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
