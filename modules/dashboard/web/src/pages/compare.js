// Comparison on the hive page: this hive against another of the account (last 24 h),
// or this hive on two days, hour by hour.
import { history } from "../api.js";
import { lineChart } from "../charts.js";
import { clear, failure, h, iso, loading } from "../dom.js";
import { accountHives } from "./overview.js";

function day(offsetDays) {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() - offsetDays);
  return d;
}

function dateValue(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function hourly(r) {
  return r.buckets.slice(0, 24).map((b) => (b.empty ? null : b.corrected?.avg ?? b.avg));
}

export async function renderCompare(ctx, hive, box, keep) {
  const title = box.querySelector("h2");
  const others = (await accountHives(ctx).catch(() => [])).filter((hv) => hv.id !== hive.id && hv.status !== "closed");
  const mode = h("select", { id: "compare-mode" },
    h("option", { value: "hives", text: "Two hives, last 24 hours" }), h("option", { value: "periods", text: "Two days" }));
  const other = h("select", { id: "compare-hive" }, others.map((hv) => h("option", { value: hv.id, text: hv.name })));
  const dayA = h("input", { id: "compare-a", type: "date", value: dateValue(day(1)) });
  const dayB = h("input", { id: "compare-b", type: "date", value: dateValue(day(8)) });
  const hivesFields = h("span", { class: "fields" }, h("label", { for: "compare-hive", text: "with" }), other);
  const periodFields = h("span", { class: "fields", hidden: true },
    h("label", { for: "compare-a", text: "Day" }), dayA, h("label", { for: "compare-b", text: "against" }), dayB);
  const out = h("div", { class: "compare-out" });
  let chart = null;
  if (!others.length) mode.value = "periods";

  async function draw() {
    const periods = mode.value === "periods";
    hivesFields.hidden = periods;
    periodFields.hidden = !periods;
    chart?.destroy();
    chart = null;
    clear(out, loading());
    const x = Array.from({ length: 24 }, (_, i) => i);
    try {
      let series;
      if (periods) {
        const a = new Date(`${dayA.value}T00:00`);
        const b = new Date(`${dayB.value}T00:00`);
        const end = (d) => iso(new Date(d.getTime() + 24 * 3600e3));
        const [ra, rb] = await Promise.all([history(ctx.api, `/v1/hives/${hive.id}`, iso(a), end(a), "1h"),
          history(ctx.api, `/v1/hives/${hive.id}`, iso(b), end(b), "1h")]);
        series = [{ label: dayA.value, values: hourly(ra) }, { label: dayB.value, values: hourly(rb), dash: [6, 4] }];
      } else {
        const to = new Date();
        to.setMinutes(0, 0, 0);
        const from = iso(new Date(to.getTime() - 24 * 3600e3));
        const otherHive = others.find((hv) => hv.id === Number(other.value));
        const [ra, rb] = await Promise.all([history(ctx.api, `/v1/hives/${hive.id}`, from, iso(to), "1h"),
          history(ctx.api, `/v1/hives/${otherHive.id}`, from, iso(to), "1h")]);
        series = [{ label: hive.name, values: hourly(ra) }, { label: otherHive.name, values: hourly(rb), dash: [6, 4] }];
      }
      chart = lineChart({ title: "Comparison, average occupancy per hour", x, series, time: false,
        xLabel: periods ? "hour of the day" : "hours since 24 h ago" });
      clear(out, keep(chart));
    } catch (err) {
      clear(out, failure(err, "Comparison"));
    }
  }
  for (const el of [mode, other, dayA, dayB]) el.addEventListener("change", draw);
  clear(box, title, h("div", { class: "inline" }, h("label", { for: "compare-mode", text: "Compare" }), mode, hivesFields, periodFields), out);
  draw();
}
