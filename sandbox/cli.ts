import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadSettings } from "../config/settings.ts";
import { UsageError } from "../host/errors.ts";
import { DockerDriver, dockerClient } from "./docker.ts";
import { ensureImage, imageStatus, planImage } from "./image.ts";

// `agents` — the agents' sandbox. `npm run agents -- help`.

const USAGE = `Usage: agents <command>

  image build     build the agent image (syntropism-agent:<hash of its inputs>) unless it exists
  image status    the image's tag, whether the engine has it, its size
  probe           whether the Docker driver can launch now, and if not why

Environment: DOCKER_HOST (unix:///var/run/docker.sock by default). docs/agents.md.
`;

export async function run(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } }, strict: true });
  const cmd = positionals.join(" ");
  if (values.help || cmd === "help" || cmd === "") {
    process.stdout.write(USAGE);
    return 0;
  }
  const settings = loadSettings();
  const docker = dockerClient(settings.sandbox.dockerHost);
  const print = (v: Record<string, unknown>, text: string) => console.log(values.json ? JSON.stringify(v) : text);
  switch (cmd) {
    case "image build": {
      const t0 = performance.now();
      const plan = planImage();
      const planned = performance.now() - t0;
      const r = await ensureImage(docker, plan);
      print({ ...r, planMs: Math.round(planned) }, r.built ? `built ${r.tag} in ${Math.round(planned + r.ms)} ms (hashing the inputs ${Math.round(planned)} ms)` : `${r.tag} is there already`);
      return 0;
    }
    case "image status": {
      const s = await imageStatus(docker);
      print(s, s.present ? `${s.tag}: present, ${((s.sizeBytes ?? 0) / 1e6).toFixed(1)} MB, created ${s.created}` : `${s.tag}: not built (npm run agents -- image build)`);
      return s.present ? 0 : 1;
    }
    case "probe": {
      const p = await new DockerDriver({ docker, image: planImage().tag }).probe();
      print(p, p.ok ? "docker: ok" : `docker: ${p.reason}`);
      return p.ok ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown command: ${cmd}`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  run(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error & { code?: string }) => {
      console.error(`agents: ${err.code ? `${err.code}: ` : ""}${err.message}`);
      if (err instanceof UsageError || (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
        process.stderr.write(USAGE);
        process.exit(64);
      }
      process.exit(1);
    },
  );
}
