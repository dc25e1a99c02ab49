import { loadSettings } from "../config/settings.ts";
import { startLocalLlmServer } from "./localServer.ts";

// npm run llm -- serve [--port N] [--seed S] [--model NAME]
// Runs the local OpenAI-compatible LLM server (docs/llm.md) until Ctrl-C, so that the agents, the
// demo and any OpenAI client have a model to talk to on a machine without internet. Prints the base
// URL (http://127.0.0.1:PORT/v1) on stdout once it listens; the seed defaults to LLM_LOCAL_SEED and
// the API key, when one is wanted, comes from LLM_LOCAL_API_KEY (kept off the command line).

const usage = "usage: llm serve [--port N] [--seed S] [--model NAME]";

function options(args: string[]): { port: number; seed?: number; model?: string } | string {
  const out: { port: number; seed?: number; model?: string } = { port: 0 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = args[i + 1];
    if ((a === "--port" || a === "--seed") && value !== undefined && /^\d+$/.test(value)) {
      const n = Number(value);
      if (a === "--port" && n > 65535) return `--port ${value}: at most 65535`;
      if (a === "--port") out.port = n;
      else out.seed = n;
      i++;
    } else if (a === "--model" && value) {
      out.model = value;
      i++;
    } else {
      return `${a}: not understood`;
    }
  }
  return out;
}

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  const parsed = cmd === "serve" ? options(rest) : `${cmd ?? "(no command)"}: not a command`;
  if (typeof parsed === "string") {
    console.error(`llm: ${parsed}\n${usage}`);
    return 64;
  }
  const settings = loadSettings().llm;
  const server = await startLocalLlmServer({ port: parsed.port, seed: parsed.seed ?? settings.localSeed, model: parsed.model, apiKey: settings.localApiKey });
  console.log(server.baseURL);
  console.error(`llm: local OpenAI-compatible server on ${server.baseURL} (seed ${parsed.seed ?? settings.localSeed}${settings.localApiKey ? ", API key required" : ""}); Ctrl-C stops it`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await server.close();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`llm: ${(err as Error).message}`);
    process.exit(1);
  },
);
