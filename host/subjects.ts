/**
 * A NATS subject: non-empty tokens separated by dots, no whitespace. With wildcards allowed, `*`
 * may stand for a whole token and `>` may be the last token.
 */
export function isValidSubject(subject: string, opts: { wildcards?: boolean } = {}): boolean {
  if (typeof subject !== "string" || subject.length === 0) return false;
  const tokens = subject.split(".");
  return tokens.every((t, i) => {
    if (t.length === 0 || /\s/.test(t)) return false;
    if (t === "*" || t === ">") return opts.wildcards === true && (t === "*" || i === tokens.length - 1);
    return !t.includes("*") && !t.includes(">");
  });
}
