/**
 * The two delivery ends of a pipeline: one Service Bus queue, or one NDJSON file, per destination,
 * with checkpoints acknowledged once everything before them is durable.
 *
 *   const out = toServiceBus({ connectionString });
 *   pipeline(source, out); for await (const cp of out.checkpoints()) saveState(cp);
 */
import { partitionByTable, type Partitioner, type PartitionOptions } from '../streams/partition.js';
import { destinationKey } from '../streams/destination.js';
import { fileSink, type FileSinkOptions } from './files/file-sink.js';
import { serviceBusSink, type ServiceBusSinkOptions } from './service-bus/sink.js';
import { checkOptions } from '../options.js';

interface Common {
  /** Destination of envelopes without `metadata.Destination`. Default `{table}_cdc_events`. */
  template?: string;
  maxPartitions?: number;
  onCheckpoint?: PartitionOptions['onCheckpoint'];
  /** Called with each sink as it is created (for stats and logs). */
  onSink?: (destination: string, sink: ReturnType<PartitionOptions['sinkFor']>) => void;
}

export type ToServiceBusOptions = Common & Omit<ServiceBusSinkOptions, 'queue'>;
export type ToFilesOptions = Common & Omit<FileSinkOptions, 'destination'>;

/** Splits the partitioning options from the sink's, and builds the partitioner around `make`. */
function partitioned<O extends Common>(options: O, make: (destination: string, sinkOptions: Omit<O, keyof Common>) => ReturnType<PartitionOptions['sinkFor']>): Partitioner {
  const { template: _t, maxPartitions: _m, onCheckpoint: _c, onSink: _s, ...sinkOptions } = options;
  return partitionByTable({
    keyOf: destinationKey(options.template),
    maxPartitions: options.maxPartitions,
    onCheckpoint: options.onCheckpoint,
    sinkFor: (destination) => {
      const sink = make(destination, sinkOptions);
      options.onSink?.(destination, sink);
      return sink;
    },
  });
}

/** One Service Bus queue per destination, sharing one connection. */
export function toServiceBus(options: ToServiceBusOptions): Partitioner {
  checkOptions('toServiceBus', options);
  return partitioned(options, (queue, sink) => serviceBusSink({ ...sink, queue }));
}

/** One `<dir>/<destination>.ndjson` per destination, fsynced before acknowledging. */
export function toFiles(options: ToFilesOptions): Partitioner {
  checkOptions('toFiles', options);
  return partitioned(options, (destination, sink) => fileSink({ ...sink, destination }));
}
