import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { recordLatency, sentAtOf } from "../report.ts";

// The raw nats.js baseline, run as its own process like a host worker:
//   respond SUBJECT                                  core subscription answering with the request's bytes
//   consume STREAM CONSUMER MAX_MESSAGES [report]    consume() + ack(); with `report`, latencies as in lat.ts
// Prints "ready" once it is serving; stops cleanly on SIGTERM.

const [mode, ...args] = process.argv.slice(2);
const nc = await connect({ servers: process.env.NATS_URL, name: `bench-raw-${mode}` });
let stop: () => Promise<void>;

if (mode === "respond") {
  const sub = nc.subscribe(args[0]!, { callback: (_err, msg) => void msg.respond(msg.data) });
  stop = () => sub.drain();
} else if (mode === "consume") {
  const [stream, name, max, report] = args;
  const consumer = await jetstream(nc).consumers.get(stream!, name!);
  const messages = await consumer.consume({
    max_messages: Number(max),
    callback: report
      ? (m) => {
          recordLatency(nc, sentAtOf(m.data));
          m.ack();
        }
      : (m) => void m.ack(),
  });
  stop = async () => {
    await messages.close();
  };
} else {
  throw new Error(`unknown mode ${mode}`);
}

await nc.flush();
process.stdout.write("ready\n");
process.once("SIGTERM", () => {
  void stop()
    .then(() => nc.drain())
    .finally(() => process.exit(0));
});
