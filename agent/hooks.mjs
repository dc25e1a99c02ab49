// Module resolution hook: `@syntropism/agent` is the SDK beside this file, wherever the agent
// program itself lives (/workspace in a container, any folder with the process driver), so that
// an agent imports it by name and never by a path that differs between drivers.
const SDK = new URL("./sdk.mjs", import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier === "@syntropism/agent") return { url: SDK, shortCircuit: true, format: "module" };
  return next(specifier, context);
}
