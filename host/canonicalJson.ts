import { createHash } from "node:crypto";
import canonicalize from "canonicalize";
import { ErrorCode, HostError } from "./errors.ts";

// RFC 8785 (JSON Canonicalization Scheme) text of a value, and its SHA-256. `canonicalize` is the
// scheme's reference implementation, by one of the RFC's authors; it sorts keys by UTF-16 code
// units and prints numbers the ECMAScript way, which is what makes a hash reproducible in any
// language with a JCS library.
//
// It is also as forgiving as JSON.stringify: undefined in an array becomes null, a BigInt throws an
// unhelpful TypeError, a Map becomes {}, a Date goes through toJSON. Each of those would hash
// something other than what the caller holds, or what a reader will see after a round trip, so
// the value is checked first and anything JSON cannot carry is refused with its path.

/** Why `value` is not plain JSON data, as `path: problem`; undefined when it is. */
export function nonJsonReason(value: unknown, path = ""): string | undefined {
  return walk(value, path, new Set());
}

const at = (path: string) => path || "(root)";
const LONE_SURROGATE = /\p{Cs}/u;

function walk(value: unknown, path: string, ancestors: Set<object>): string | undefined {
  switch (typeof value) {
    case "string":
      return LONE_SURROGATE.test(value) ? `${at(path)}: a lone UTF-16 surrogate cannot be encoded as UTF-8` : undefined;
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : `${at(path)}: ${value} is not a JSON number`;
    case "bigint":
      return `${at(path)}: a BigInt is not a JSON number (use a string, or a number within 2^53)`;
    case "undefined":
      return `${at(path)}: undefined is not JSON (use null)`;
    case "function":
    case "symbol":
      return `${at(path)}: a ${typeof value} is not JSON`;
  }
  if (value === null) return undefined;
  const obj = value as object;
  if (ancestors.has(obj)) return `${at(path)}: circular reference`;
  ancestors.add(obj);
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        const p = path ? `${path}.${i}` : String(i);
        if (!(i in obj)) return `${p}: an array hole is not JSON (use null)`;
        const why = walk(obj[i], p, ancestors);
        if (why) return why;
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const kind = (proto?.constructor as { name?: string } | undefined)?.name || "object";
      return `${at(path)}: a ${kind} is not plain JSON data; convert it first (a Date with toISOString(), a Map with Object.fromEntries)`;
    }
    for (const [key, child] of Object.entries(obj)) {
      const p = path ? `${path}.${key}` : key;
      if (LONE_SURROGATE.test(key)) return `${p}: a lone UTF-16 surrogate in a key cannot be encoded as UTF-8`;
      // an undefined property is simply absent in JSON, for JSON.stringify and canonicalize alike:
      // the hash covers what goes on the wire, so `{ to: undefined }` hashes like `{}`
      if (child === undefined) continue;
      const why = walk(child, p, ancestors);
      if (why) return why;
    }
    return undefined;
  } finally {
    ancestors.delete(obj);
  }
}

/** The RFC 8785 canonical JSON text of `value`; throws HOST_ERR_ENVELOPE naming the bad path. */
export function canonicalJson(value: unknown): string {
  const why = nonJsonReason(value);
  if (why) throw new HostError(ErrorCode.Envelope, `cannot canonicalize: ${why}`);
  return canonicalize(value)!;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}
