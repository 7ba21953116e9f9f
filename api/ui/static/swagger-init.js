// Swagger UI (from the flask-openapi3-swagger package) on the served /openapi.json.
"use strict";
window.addEventListener("load", function () {
  const holder = document.getElementById("swagger-ui");
  if (!holder || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({ url: holder.dataset.url, dom_id: "#swagger-ui", deepLinking: true });
});
