// The economy's storage layer: what the economy's functions import. Everything else under
// economy/ is internal.

export { connect, DEFAULT_DATA_DIR, migrate, MIGRATIONS_DIR, openDatabase } from "./db.ts";
export type { ConnectOptions, Database, Db, MigrateResult, OpenDatabaseOptions, Sql, TransactionSql } from "./db.ts";
export {
  agentAccount,
  balance,
  BURN_ACCOUNT,
  burn,
  checkLedger,
  inTransaction,
  lockAccounts,
  MINT_ACCOUNT,
  mint,
  openAccount,
  reserved,
  transfer,
} from "./ledger.ts";
export type { Balance, BurnInput, LedgerCheck, LedgerKind, MintInput, MintKind, OpenAccountOptions, Receipt, TransferInput, TransferKind } from "./ledger.ts";
export { asAmount, formatCredits, MAX_MICRO, MICRO_PER_CREDIT, toCredits, toMicro } from "./money.ts";
export {
  EconomyError,
  EconomyErrorCode,
  IdempotencyConflictError,
  InsufficientFundsError,
  InvalidAmountError,
  InvalidArgumentError,
  isEconomyError,
  isRefusal,
  isConnectionError,
  isSerializationError,
  classifyEconomyError,
  MigrationError,
  TickRefusedError,
  UnknownAgentError,
} from "./errors.ts";
export { EmbeddedPostgresError, startEmbeddedPostgres } from "./embeddedPostgres.ts";
export type { EmbeddedPostgresOptions, RunningPostgres } from "./embeddedPostgres.ts";
