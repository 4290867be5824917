// ComfyUI-FDTA frontend extension (served at /extensions/ComfyUI-FDTA/js/fdta.js).
//
// Registers, through the frontend's public extension API only:
// * commands FDTA.OpenAttributeEditor (the selected, else the first, FDTAAttributeSpec node) and
//   FDTA.OpenRunPanel, listed under the menu Extensions › FDTA;
// * a button on every FDTAAttributeSpec node that opens its attribute editor (not saved in workflows);
// * the sidebar tab "FDTA" (the run panel);
// * settings FDTA › LLM › Base URL and Model, the defaults of FDTAAttributePrompt where its widget is empty.
//   The API key is deliberately not a setting: ComfyUI keeps settings in a plain-text file and serves them
//   over HTTP, so the key comes from the environment only;
// * colours for FDTA nodes so the pipeline stages stand out in a graph.
import { app } from "../../../scripts/app.js";
import { findSpecNode, openAttributeEditor, setDefaultSpecText } from "./fdta_editor.js";
import { installRunStore, mountRunPanel } from "./fdta_run_panel.js";

const SIDEBAR_ID = "fdta";
// The section title says it where a user would look for the key: settings are plain text on disk.
const LLM_SECTION = "LLM (the API key is never stored here: set OPENAI_API_KEY in ComfyUI's environment)";
let unmountPanel = null;

function openRunPanel() {
  const tabs = app.extensionManager?.sidebarTab;
  if (tabs && tabs.activeSidebarTabId === SIDEBAR_ID) return;
  app.extensionManager.command.execute(`Workspace.ToggleSidebarTab.${SIDEBAR_ID}`);
}

app.registerExtension({
  name: "FDTA.Frontend",
  commands: [
    {
      id: "FDTA.OpenAttributeEditor",
      label: "Open FDTA attribute editor",
      icon: "pi pi-sliders-h",
      tooltip: "Edit the population of the selected (else the first) FDTA Attribute Spec node",
      function: () => openAttributeEditor(app, findSpecNode(app)),
    },
    {
      id: "FDTA.OpenRunPanel",
      label: "Open FDTA run panel",
      icon: "pi pi-chart-bar",
      tooltip: "Data-set progress of the running prompt and the chunks already written",
      function: () => openRunPanel(),
    },
  ],
  menuCommands: [{ path: ["Extensions", "FDTA"], commands: ["FDTA.OpenAttributeEditor", "FDTA.OpenRunPanel"] }],
  settings: [
    {
      id: "FDTA.LLM.BaseURL",
      category: ["FDTA", LLM_SECTION, "BaseURL"],
      name: "LLM base URL (OpenAI-compatible)",
      type: "text",
      defaultValue: "",
      attrs: { placeholder: "empty = OpenAI" },
      tooltip:
        "Used by FDTA Attribute Prompt when its base_url widget is empty, e.g. http://127.0.0.1:11434/v1 for " +
        "Ollama; empty here too = OpenAI. The API key is never a setting: ComfyUI stores settings as plain text " +
        "on disk (and serves them over HTTP), so set OPENAI_API_KEY (or the variable named in the node's " +
        "api_key_env) in the environment that starts ComfyUI.",
    },
    {
      id: "FDTA.LLM.Model",
      category: ["FDTA", LLM_SECTION, "Model"],
      name: "LLM model",
      type: "text",
      defaultValue: "",
      attrs: { placeholder: "empty = gpt-4o-mini" },
      tooltip:
        "Used by FDTA Attribute Prompt when its model widget is empty; empty here too = gpt-4o-mini. " +
        "API key: environment only (OPENAI_API_KEY), never stored in settings.",
    },
  ],
  async setup() {
    installRunStore();
    app.extensionManager.registerSidebarTab({
      id: SIDEBAR_ID,
      icon: "pi pi-chart-bar",
      title: "FDTA",
      tooltip: "FDTA run: data-set progress and written chunks",
      type: "custom",
      render: (el) => {
        unmountPanel?.();
        unmountPanel = mountRunPanel(el);
      },
      destroy: () => {
        unmountPanel?.();
        unmountPanel = null;
      },
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("FDTA")) return;
    if (nodeData.name === "FDTAAttributeSpec") {
      setDefaultSpecText(nodeData.input?.required?.spec?.[1]?.default);
    }
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      this.color = "#2a363b";
      this.bgcolor = "#3f5159";
      if (nodeData.name === "FDTAAttributeSpec") {
        const button = this.addWidget("button", "Open attribute editor", null, () => openAttributeEditor(app, this), {
          serialize: false,
        });
        button.serialize = false; // never part of widgets_values: saved workflows keep their widget order
      }
      return r;
    };
  },
});
