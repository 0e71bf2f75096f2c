// Shared by the tests that boot the real appliance: build or reuse it, pick the accelerator, start a machine.
// (No tests here; tap reports this file as skipped.)
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { type Appliance, ensureAppliance } from "../../src/vm/appliance/index.js";
import { bootKernel, type Machine, type StartOptions, startAppliance } from "../../src/vm/machine.js";
import { type AccelVerdict, chooseAccel, findQemu, type QemuInfo } from "../../src/vm/probe.js";

export interface TestVm {
  readonly appliance: Appliance;
  readonly qemu: QemuInfo;
  readonly accel: AccelVerdict;
}

let prepared: Promise<TestVm> | undefined;

/** The appliance (built once into the user's cache), QEMU and the accelerator this host can use. */
export function prepareVm(): Promise<TestVm> {
  prepared ??= (async () => {
    const qemu = await findQemu();
    const appliance = await ensureAppliance({ env: process.env, offline: false });
    const accel = await chooseAccel({ qemu, kernel: bootKernel(appliance) });
    return { appliance, qemu, accel };
  })();
  return prepared;
}

/** Boot a machine for a test (2 vCPUs, 1 GiB unless asked otherwise). */
export async function bootMachine(extra: Partial<StartOptions> = {}): Promise<Machine> {
  const vm = await prepareVm();
  return await startAppliance({
    appliance: vm.appliance,
    qemu: vm.qemu,
    accel: vm.accel,
    memoryMiB: 1024,
    ...extra,
  });
}

/** A temporary directory removed by `done`. */
export async function tempDir(prefix: string): Promise<{ path: string; done: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, done: () => rm(path, { recursive: true, force: true }) };
}

/** A Writable-like sink that collects text. */
export function collector(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void) {
      chunks.push(chunk);
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

/** Poll until `pred` holds or `ms` pass; returns whether it held. */
export async function waitFor(pred: () => boolean | Promise<boolean>, ms: number, stepMs = 200): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return await pred();
}
