#!/usr/bin/env node
// `host` binary: registers tsx so the TypeScript sources run as they are, then runs the CLI.
import { register } from "tsx/esm/api";

register();
const { run } = await import("../cli/host.ts");
run(process.argv.slice(2));
