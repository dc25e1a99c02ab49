// The project's tests use the public testing helpers (syntropism/testing).
export * from "../../testing/nats.ts";
