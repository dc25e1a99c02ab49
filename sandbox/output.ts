import type { OutputStream } from "./types.ts";

// An agent's output, both streams: handed on line by line as it comes (a partial line waits for its
// end, or for `end()`), and its last 64 KiB kept for the execution's record. Lines longer than the
// cap are cut, so one endless line cannot hold memory.

export const TAIL_BYTES = 64 * 1024;

export type OutputSink = {
  write(chunk: Buffer | string, stream: OutputStream): void;
  /** Flushes partial lines; later writes are ignored. */
  end(): void;
  /** The last TAIL_BYTES of what was written, whole lines. */
  tail(): string;
};

export function outputSink(onLine?: (line: string, stream: OutputStream) => void, maxBytes = TAIL_BYTES): OutputSink {
  const partial: Record<OutputStream, string> = { stdout: "", stderr: "" };
  const lines: string[] = [];
  let size = 0;
  let ended = false;
  const keep = (line: string, stream: OutputStream) => {
    const cut = line.length > maxBytes ? `${line.slice(0, maxBytes - 16)}…[cut]` : line;
    lines.push(cut);
    size += Buffer.byteLength(cut) + 1;
    while (size > maxBytes && lines.length > 1) size -= Buffer.byteLength(lines.shift()!) + 1;
    try {
      onLine?.(cut, stream);
    } catch {
      // a listener's failure is not the agent's
    }
  };
  return {
    write(chunk, stream) {
      if (ended) return;
      const text = partial[stream] + chunk.toString();
      const parts = text.split("\n");
      partial[stream] = parts.pop()!;
      for (const l of parts) keep(l.replace(/\r$/, ""), stream);
      if (partial[stream].length > maxBytes) {
        keep(partial[stream], stream);
        partial[stream] = "";
      }
    },
    end() {
      if (ended) return;
      for (const s of ["stdout", "stderr"] as const) if (partial[s]) keep(partial[s], s);
      ended = true;
    },
    tail: () => lines.join("\n"),
  };
}
