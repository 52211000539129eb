// World choropleth from world-atlas TopoJSON (vendor/countries-110m.json),
// drawn as SVG in an equirectangular projection. No library: a TopoJSON
// decoder is a few lines (delta-decode quantized arcs, stitch rings).
"use strict";

const JasperMap = (() => {
  let shapes = null; // [{a2, name, d}]

  function decodeArcs(topo) {
    const [sx, sy] = topo.transform.scale, [tx, ty] = topo.transform.translate;
    return topo.arcs.map((arc) => {
      let x = 0, y = 0;
      return arc.map(([dx, dy]) => { x += dx; y += dy; return [x * sx + tx, y * sy + ty]; });
    });
  }

  const W = 960, H = 470; // lat -85..85 (trimmed poles) onto H
  const px = (lon) => ((lon + 180) / 360) * W;
  const py = (lat) => ((85 - lat) / 170) * H;

  // ringPath returns the SVG path of a ring. Rings that cross the
  // antimeridian (Russia, Fiji) are unwrapped into continuous longitudes and
  // drawn a second time shifted by 360 degrees; the SVG clips both copies.
  function ringPath(ring, arcs) {
    const pts = [];
    for (const i of ring) {
      const arc = i >= 0 ? arcs[i] : arcs[~i].slice().reverse();
      for (let k = pts.length ? 1 : 0; k < arc.length; k++) pts.push(arc[k].slice());
    }
    let lo = 180, hi = -180;
    for (let k = 0; k < pts.length; k++) {
      if (k > 0) {
        const d = pts[k][0] - pts[k - 1][0];
        if (d > 180) pts[k][0] -= 360 * Math.round(d / 360);
        else if (d < -180) pts[k][0] += 360 * Math.round(-d / 360);
      }
      lo = Math.min(lo, pts[k][0]);
      hi = Math.max(hi, pts[k][0]);
    }
    const draw = (shift) => "M" + pts.map(([lon, lat]) => px(lon + shift).toFixed(1) + "," + py(Math.max(-85, Math.min(85, lat))).toFixed(1)).join("L") + "Z";
    if (hi - lo > 350) return draw(0); // Antarctica: circles the pole
    let d = draw(0);
    if (hi > 180) d += draw(-360);
    if (lo < -180) d += draw(360);
    return d;
  }

  async function load() {
    if (shapes) return shapes;
    const [topo, codes] = await Promise.all([
      fetch("vendor/countries-110m.json").then((r) => r.json()),
      fetch("vendor/iso-codes.json").then((r) => r.json()),
    ]);
    const byNum = {};
    for (const [a2, , num] of codes) byNum[num] = a2;
    const arcs = decodeArcs(topo);
    shapes = [];
    for (const g of topo.objects.countries.geometries) {
      const polys = g.type === "Polygon" ? [g.arcs] : g.type === "MultiPolygon" ? g.arcs : [];
      const d = polys.map((p) => p.map((r) => ringPath(r, arcs)).join("")).join("");
      shapes.push({ a2: byNum[g.id] || "", name: (g.properties && g.properties.name) || "", d });
    }
    return shapes;
  }

  // draw renders counts (alpha-2 -> {packets, sources}) into el; onPick is
  // called with a country code when a coloured country is clicked.
  async function draw(el, counts, metric, onPick) {
    const sh = await load();
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "map");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "sources by country");
    let max = 0, min = Infinity;
    for (const v of Object.values(counts)) {
      const n = v[metric] || 0;
      if (n > 0) { max = Math.max(max, n); min = Math.min(min, n); }
    }
    const lmin = Math.log(min), lspan = Math.log(max) - lmin || 1;
    for (const s of sh) {
      const p = document.createElementNS(ns, "path");
      p.setAttribute("d", s.d);
      const v = counts[s.a2];
      const n = v ? v[metric] || 0 : 0;
      if (n > 0) {
        const t = max === min ? 1 : (Math.log(n) - lmin) / lspan; // 0..1
        const l = 84 - t * 52;
        p.setAttribute("fill", `hsl(12, 85%, ${l.toFixed(0)}%)`);
        p.setAttribute("class", "has");
        p.dataset.country = s.a2;
        p.addEventListener("click", () => onPick && onPick(s.a2));
      } else {
        p.setAttribute("fill", "#cfd8e3");
      }
      const title = document.createElementNS(ns, "title");
      title.textContent = `${s.name} (${s.a2 || "?"}): ` + (v ? `${v.packets.toLocaleString()} packets, ${v.sources.toLocaleString()} sources` : "no sources");
      p.appendChild(title);
      svg.appendChild(p);
    }
    const key = document.createElement("div");
    key.className = "legend map-key";
    const swatch = (l, label) => {
      const s = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = `hsl(12, 85%, ${l}%)`;
      s.append(i, label);
      return s;
    };
    if (max > 0) key.append(swatch(84, `${min.toLocaleString("en-US")} ${metric}`), swatch(58, "…"), swatch(32, `${max.toLocaleString("en-US")} ${metric}`));
    else key.append("no sources for these filters");
    el.replaceChildren(svg, key);
    return svg;
  }

  return { draw };
})();
