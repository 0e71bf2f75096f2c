// Tests bench/stats.ts: medians of odd and even counts, min/max, ratios of medians, and their printed forms.
import t from "tap";
import { formatBytes, formatRatio, formatSeconds, ratio, summarize } from "../../bench/stats.js";

t.test("summarize: median, min, max, count; unordered input; no samples", async (t) => {
  t.same(summarize([3, 1, 2]), { n: 3, median: 2, min: 1, max: 3 });
  t.same(summarize([4, 1, 3, 2]), { n: 4, median: 2.5, min: 1, max: 4 });
  t.same(summarize([7]), { n: 1, median: 7, min: 7, max: 7 });
  t.equal(summarize([]), undefined);
  t.same(summarize([Number.NaN, 5]), { n: 1, median: 5, min: 5, max: 5 }, "a non-number is not a sample");
});

t.test("ratio divides the medians, and is undefined without both", async (t) => {
  t.equal(ratio(summarize([2, 4, 100]), summarize([8, 8])), 0.5);
  t.equal(ratio(undefined, summarize([1])), undefined);
  t.equal(ratio(summarize([1]), undefined), undefined);
  t.equal(ratio(summarize([1]), summarize([0])), undefined);
});

t.test("formats", async (t) => {
  t.equal(formatSeconds(420), "0.42 s");
  t.equal(formatSeconds(7_560), "7.56 s");
  t.equal(formatSeconds(38_960), "39.0 s");
  t.equal(formatSeconds(123_400), "123 s");
  t.equal(formatRatio(0.4512), "0.45×");
  t.equal(formatRatio(12.34), "12.3×");
  t.equal(formatRatio(undefined), "–");
  t.equal(formatBytes(999), "999 B");
  t.equal(formatBytes(179_370_496), "179.4 MB");
  t.equal(formatBytes(2_500_000_000), "2.50 GB");
});
