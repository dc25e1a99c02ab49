#!/usr/bin/env node
// `scenario` binary: registers tsx, then runs the scenario CLI.
import { register } from "tsx/esm/api";

register();
const { run } = await import("../scenarios/cli.ts");
run(process.argv.slice(2));
