"""The dashboard's static files (``index.html``, ``app.js``, ``style.css``), shipped as
package data and served by ``myriad.server.telemetry_api``. Plain HTML, JavaScript and
CSS: no build step, no CDN (Myriad runs offline)."""
