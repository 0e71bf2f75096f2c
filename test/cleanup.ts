// Tests src/cleanup.ts: reverse order, early release, and that a cleanup failure never hides the first error.
import t from "tap";
import { CleanupStack, withCleanup } from "../src/cleanup.js";

t.test("unwinds newest first and runs every step even when one fails", async (t) => {
  const s = new CleanupStack();
  const order: string[] = [];
  s.push("a", () => order.push("a"));
  s.push("b", () => {
    throw new Error("boom");
  });
  s.push("c", async () => order.push("c"));
  const errors = await s.unwind();
  t.same(order, ["c", "a"]);
  t.equal(errors.length, 1);
  t.match(errors[0]?.message, /cleanup 'b' failed: boom/);
  t.equal(s.size, 0);
});

t.test("a released step runs once, early, and not again on unwind", async (t) => {
  const s = new CleanupStack();
  let n = 0;
  const release = s.push("x", () => n++);
  await release();
  await release();
  await s.unwind();
  t.equal(n, 1);
});

t.test("withCleanup: the body's error wins over cleanup errors", async (t) => {
  const first = new Error("first");
  const seen: Error[] = [];
  const err = await withCleanup(
    async (s) => {
      s.push("bad", () => {
        throw new Error("second");
      });
      throw first;
    },
    (e) => seen.push(e),
  ).catch((e: unknown) => e);
  t.equal(err, first);
  t.equal(seen.length, 1);
  t.match((first as Error & { cleanupErrors?: Error[] }).cleanupErrors?.[0]?.message, /second/);
});

t.test("withCleanup: after success a cleanup failure is thrown", async (t) => {
  await t.rejects(
    withCleanup(async (s) => {
      s.push("bad", () => {
        throw new Error("late");
      });
      return 1;
    }),
    /late/,
  );
  t.equal(await withCleanup(async () => 42), 42);
});
