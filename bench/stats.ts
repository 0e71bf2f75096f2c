// Benchmark arithmetic (pure): summaries of repeated timings, ratios to a reference, and how they are printed.

export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** Median (mean of the middle two for an even count), min and max; undefined for no samples. */
export function summarize(samples: readonly number[]): Summary | undefined {
  const s = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return undefined;
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
  return { n: s.length, median, min: s[0] as number, max: s[s.length - 1] as number };
}

/** a / b of the medians; undefined when either is missing or b is zero. */
export function ratio(a: Summary | undefined, b: Summary | undefined): number | undefined {
  if (!a || !b || b.median === 0) return undefined;
  return a.median / b.median;
}

/** Milliseconds as seconds with a precision that suits the size: "0.42 s", "7.6 s", "123 s". */
export function formatSeconds(ms: number): string {
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 100) return `${s.toFixed(1)} s`;
  return `${s.toFixed(0)} s`;
}

/** "0.45×"; "–" when there is nothing to compare. */
export function formatRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return "–";
  return `${r < 10 ? r.toFixed(2) : r.toFixed(1)}×`;
}

/** Bytes in decimal units, as `vmdib appliance info` prints them. */
export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}
