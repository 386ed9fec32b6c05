/**
 * The contract every provisioning engine meets: given what the task wants to exist, plan, apply,
 * report and remove it. Results are structured; formatting belongs to the CLI.
 */
import type { ResourceReport } from '../protocol/messages.js';
import type { DesiredQueue } from './desired.js';

export interface InfraResult {
  resources: ResourceReport[];
  summary: string;
  [key: string]: unknown;
}

export interface InfrastructureEngine {
  plan(desired: DesiredQueue[]): Promise<InfraResult>;
  init(desired: DesiredQueue[]): Promise<InfraResult>;
  status(desired: DesiredQueue[]): Promise<InfraResult>;
  /** Removes what this task created, and only that. */
  destroy(): Promise<InfraResult>;
}
