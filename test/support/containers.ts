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

export const MSSQL_IMAGE = 'mcr.microsoft.com/mssql/server:2022-latest';
export const SERVICE_BUS_EMULATOR_IMAGE = 'mcr.microsoft.com/azure-messaging/servicebus-emulator:latest';
export const SA_PASSWORD = 'dstream-Test-1!';

type Cleanups = Array<() => Promise<unknown>>;
type Network = import('testcontainers').StartedNetwork;

/** A network for containers that talk to each other; stopped last. */
export async function startNetwork(cleanups: Cleanups): Promise<Network> {
  const { Network } = await import('testcontainers');
  const network = await new Network().start();
  cleanups.push(() => network.stop());
  return network;
}

/**
 * SQL Server 2022 on `network` as host `mssql`, with SQL Server Agent (the CDC capture and cleanup
 * jobs run under it). Returns a connection string for the host (as sa, to master).
 */
export async function startSqlServer(cleanups: Cleanups, network: Network, options: { agent?: boolean } = {}): Promise<string> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const mssql = await new GenericContainer(MSSQL_IMAGE)
    .withNetwork(network)
    .withNetworkAliases('mssql')
    .withExposedPorts(1433)
    .withEnvironment({ ACCEPT_EULA: 'Y', MSSQL_SA_PASSWORD: SA_PASSWORD, ...(options.agent ? { MSSQL_AGENT_ENABLED: 'true' } : {}) })
    .withWaitStrategy(Wait.forLogMessage(/Recovery is complete/).withStartupTimeout(180_000))
    .start();
  cleanups.unshift(() => mssql.stop());
  return `Server=${mssql.getHost()},${mssql.getMappedPort(1433)};User Id=sa;Password=${SA_PASSWORD};Encrypt=false;TrustServerCertificate=true`;
}

/** The Service Bus emulator, backed by the SQL Server called `mssql` on `network`, with these queues. */
export async function startServiceBusEmulator(cleanups: Cleanups, network: Network, queues: string[]): Promise<string> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const config = {
    UserConfig: {
      Namespaces: [
        {
          Name: 'sbemulatorns',
          Queues: queues.map((Name) => ({
            Name,
            Properties: { RequiresDuplicateDetection: true, DuplicateDetectionHistoryTimeWindow: 'PT10M', MaxDeliveryCount: 10, LockDuration: 'PT1M' },
          })),
          Topics: [],
        },
      ],
      Logging: { Type: 'Console' },
    },
  };
  const emulator = await new GenericContainer(SERVICE_BUS_EMULATOR_IMAGE)
    .withNetwork(network)
    .withExposedPorts(5672, 5300)
    .withEnvironment({ ACCEPT_EULA: 'Y', SQL_SERVER: 'mssql', MSSQL_SA_PASSWORD: SA_PASSWORD, SQL_WAIT_INTERVAL: '0' })
    .withCopyContentToContainer([{ content: JSON.stringify(config), target: '/ServiceBus_Emulator/ConfigFiles/Config.json', mode: 0o644 }])
    .withWaitStrategy(Wait.forHttp('/health', 5300).forStatusCode(200).withStartupTimeout(180_000))
    .start();
  cleanups.unshift(() => emulator.stop());
  return `Endpoint=sb://${emulator.getHost()}:${emulator.getMappedPort(5672)};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`;
}
