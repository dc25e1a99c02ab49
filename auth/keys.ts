import { createHmac, createPrivateKey, createPublicKey, sign as edSign, type KeyObject } from "node:crypto";
import { fromSeed, type KeyPair } from "@nats-io/nkeys";
// the seed codec is not re-exported by the package's index; the module is part of its published files
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { Prefix } from "@nats-io/nkeys";

// NATS nkeys with node's native Ed25519 for signing. The pure-JS nkeys re-derive the key pair from
// the seed on every getPublicKey() and sign() (about 25 ms each on this machine kind), so minting a
// user JWT cost ~80 ms; with the public key and the signatures from node's crypto it is a
// fraction of that (bench/auth.ts measures it). Signatures are identical: Ed25519 is deterministic.

const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");

/** A KeyPair for @nats-io/jwt whose `sign` is native and whose public key is derived once. */
export function fastKeyPair(seed: string): KeyPair {
  const bytes = new TextEncoder().encode(seed);
  const inner = fromSeed(bytes);
  const { prefix, buf: raw } = Codec.decodeSeed(bytes);
  const key: KeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw]), format: "der", type: "pkcs8" });
  // the raw public key is the last 32 bytes of its SPKI encoding
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  const pub = new TextDecoder().decode(Codec.encode(prefix, new Uint8Array(spki.subarray(spki.length - 32))));
  return {
    getPublicKey: () => pub,
    getPrivateKey: () => inner.getPrivateKey(),
    getSeed: () => inner.getSeed(),
    sign: (input: Uint8Array) => new Uint8Array(edSign(null, input, key)),
    verify: (input: Uint8Array, sig: Uint8Array) => inner.verify(input, sig),
    clear: () => inner.clear(),
    seal: (input, recipient, nonce) => inner.seal(input, recipient, nonce),
    open: (message, sender) => inner.open(message, sender),
  };
}

/**
 * The user key of one agent, derived from the agent signing key's seed and the agent id (HMAC-SHA256):
 * the same agent always has the same public key, so one revocation entry in the account JWT covers
 * every credential it was ever issued, and no issued key needs to be recorded anywhere.
 */
export function agentUserSeed(signerSeed: string, agentId: string): string {
  const raw = createHmac("sha256", signerSeed).update(`syntropism agent user key\0${agentId}`).digest();
  return new TextDecoder().decode(Codec.encodeSeed(Prefix.User, new Uint8Array(raw)));
}

/** Reads a seed (`S…`) and says which kind of key it is: O operator, A account, U user. */
export function seedKind(seed: string): string | undefined {
  try {
    return fromSeed(new TextEncoder().encode(seed.trim())).getPublicKey().charAt(0);
  } catch {
    return undefined;
  }
}
