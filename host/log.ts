// JSON-lines logger with a fixed field order. Bound context (function, stream sequence, message id,
// trace ids …) comes first and cannot be overwritten by the fields of a single call: a clashing
// field is kept under `fields.<name>` instead.

export type Level = "debug" | "info" | "warn" | "error";
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Keys the host owns, in the order they are written. */
export const RESERVED_KEYS = [
  "time",
  "level",
  "msg",
  "service",
  "fn",
  "stream",
  "seq",
  "msg_id",
  "correlation_id",
  "trace_id",
  "span_id",
  "worker",
] as const;
const RESERVED = new Set<string>(RESERVED_KEYS);

export type Fields = Record<string, unknown>;

export type Logger = {
  debug(fields: Fields | string, msg?: string): void;
  info(fields: Fields | string, msg?: string): void;
  warn(fields: Fields | string, msg?: string): void;
  error(fields: Fields | string, msg?: string): void;
  child(bindings: Fields): Logger;
  readonly bindings: Readonly<Fields>;
};

export type LogSink = (line: string) => void;

export type LoggerOptions = {
  level?: Level;
  sink?: LogSink;
  bindings?: Fields;
};

function levelFromEnv(): Level {
  const raw = (process.env.LOG_LEVEL ?? "info").toLowerCase();
  return raw in LEVELS ? (raw as Level) : "info";
}

const defaultSink: LogSink = (line) => process.stderr.write(`${line}\n`);

function jsonSafe(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Fields = { name: value.name, message: value.message };
    if ((value as { code?: unknown }).code !== undefined) out.code = (value as { code?: unknown }).code;
    return out;
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? levelFromEnv();
  const min = LEVELS[level];
  const sink = options.sink ?? defaultSink;
  const bindings: Fields = { ...(options.bindings ?? {}) };

  const write = (level: Level, fieldsOrMsg: Fields | string, msg?: string) => {
    if (LEVELS[level] < min) return;
    const fields = typeof fieldsOrMsg === "string" ? {} : fieldsOrMsg;
    const text = typeof fieldsOrMsg === "string" ? fieldsOrMsg : (msg ?? "");
    const record: Fields = { time: new Date().toISOString(), level, msg: text };
    for (const key of RESERVED_KEYS) {
      if (key in record) continue;
      const bound = bindings[key];
      if (bound !== undefined) record[key] = jsonSafe(bound);
    }
    for (const [key, value] of Object.entries(bindings)) {
      if (!RESERVED.has(key) && value !== undefined) record[key] = jsonSafe(value);
    }
    let clashes: Fields | undefined;
    for (const [key, value] of Object.entries(fields)) {
      if (value === undefined) continue;
      if (RESERVED.has(key) || key === "fields") {
        clashes ??= {};
        clashes[key] = jsonSafe(value);
      } else {
        record[key] = jsonSafe(value);
      }
    }
    if (clashes) record.fields = clashes;
    let line: string;
    try {
      line = JSON.stringify(record);
    } catch {
      line = JSON.stringify({ time: record.time, level, msg: text, log_error: "unserialisable fields" });
    }
    sink(line);
  };

  return {
    debug: (f, m) => write("debug", f, m),
    info: (f, m) => write("info", f, m),
    warn: (f, m) => write("warn", f, m),
    error: (f, m) => write("error", f, m),
    child: (more) => createLogger({ level, sink, bindings: { ...bindings, ...more } }),
    bindings,
  };
}
