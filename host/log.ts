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


const defaultSink: LogSink = (line) => process.stderr.write(`${line}\n`);

/** Longest string a log field keeps; longer ones are cut (a guard: messages' payloads go through `preview`). */
export const MAX_FIELD_CHARS = 4096;
/** What of a message's payload may appear in a log line, an error message or a reply. */
export const PREVIEW_BYTES = 256;

/**
 * The first `max` bytes of a payload (or text) as text, marked with the whole size when cut:
 * payloads are never echoed whole into logs or error messages.
 */
export function preview(data: Uint8Array | string, max = PREVIEW_BYTES): string {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  if (bytes.length <= max) return typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  // a cut inside a multi-byte character decodes to U+FFFD: drop it
  const head = new TextDecoder("utf-8", { fatal: false }).decode(bytes.subarray(0, max)).replace(/\uFFFD$/, "");
  return `${head}… (${bytes.length} bytes)`;
}

function cut(text: string): string {
  return text.length > MAX_FIELD_CHARS ? `${text.slice(0, MAX_FIELD_CHARS)}… (${text.length} chars)` : text;
}

function jsonSafe(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Fields = { name: value.name, message: cut(value.message) };
    if ((value as { code?: unknown }).code !== undefined) out.code = (value as { code?: unknown }).code;
    return out;
  }
  if (typeof value === "string") return cut(value);
  if (typeof value === "bigint") return value.toString();
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    // one level down: serialised errors ({ name, code, message }) and similar records
    let copy: Fields | undefined;
    for (const [k, v] of Object.entries(value as Fields)) {
      if (typeof v === "string" && v.length > MAX_FIELD_CHARS) (copy ??= { ...(value as Fields) })[k] = cut(v);
    }
    return copy ?? value;
  }
  return value;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
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
