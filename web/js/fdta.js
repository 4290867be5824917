// ComfyUI-FDTA frontend extension: colours FDTA nodes so the pipeline stages stand out in a graph.
import { app } from "../../../scripts/app.js"; // served at /extensions/<pack>/js/fdta.js

app.registerExtension({
  name: "FDTA.NodeColours",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("FDTA")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      this.color = "#2a363b";
      this.bgcolor = "#3f5159";
      return r;
    };
  },
});
