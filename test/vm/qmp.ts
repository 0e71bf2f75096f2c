// Tests src/vm/qmp.ts against a fake QMP server on a unix socket: greeting and capabilities, results matched to
// their commands, errors, events set aside, a socket that appears late, a connection that closes.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { QmpClient, QmpError } from "../../src/vm/qmp.js";

/** A fake QEMU: greets, answers qmp_capabilities, then hands each command to `answer`. */
function fakeQmp(path: string, answer: (cmd: { execute: string; id: unknown }, sock: Socket) => void): Promise<Server> {
  const server = createServer((sock) => {
    sock.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n');
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id: unknown };
        buf = buf.slice(nl + 1);
        if (cmd.execute === "qmp_capabilities") sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`);
        else answer(cmd, sock);
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

t.test("commands, results, errors and events", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-qmp-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "qmp.sock");
  const server = await fakeQmp(path, (cmd, sock) => {
    if (cmd.execute === "query-status") {
      // An event first, and the answer split across writes.
      sock.write('{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n');
      const reply = JSON.stringify({ return: { status: "paused", running: false }, id: cmd.id });
      sock.write(reply.slice(0, 10));
      setTimeout(() => sock.write(`${reply.slice(10)}\r\n`), 20);
    } else {
      sock.write(
        `${JSON.stringify({ error: { class: "CommandNotFound", desc: `The command ${cmd.execute} has not been found` }, id: cmd.id })}\r\n`,
      );
    }
  });
  t.teardown(() => server.close());
  const qmp = await QmpClient.connect(path);
  t.same(await qmp.execute("query-status"), { status: "paused", running: false });
  t.same(qmp.events, [{ event: "STOP", data: {} }], "events are collected, not taken for answers");
  const err = await qmp.execute("nonsense").catch((e: unknown) => e);
  t.ok(err instanceof QmpError);
  t.equal((err as QmpError).errorClass, "CommandNotFound");
  t.match((err as QmpError).message, /QMP nonsense: The command nonsense has not been found/);
  qmp.close();
});

t.test("waits for a socket that appears late; a closed connection fails pending commands", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-qmp-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "qmp.sock");
  let server: Server | undefined;
  setTimeout(async () => {
    server = await fakeQmp(path, (_cmd, sock) => sock.destroy());
  }, 200);
  const qmp = await QmpClient.connect(path, 5000);
  t.teardown(() => server?.close());
  await t.rejects(qmp.execute("stop"), /QMP connection closed/);
  await t.rejects(qmp.execute("cont"), /QMP connection closed/, "and later ones");
});

t.test("no socket at all: gives up after the timeout", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-qmp-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await t.rejects(QmpClient.connect(join(dir, "nothing.sock"), 300), { code: "ENOENT" });
});
