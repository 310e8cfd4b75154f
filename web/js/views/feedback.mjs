// What a settings form says back: a status line for what was done, an alert for what was
// not. Shared by the settings, room settings and administration views.
import { h } from "../dom.mjs";

export class Feedback {
  constructor() {
    this.status = h("p", { class: "notice", role: "status" });
    this.error = h("p", { class: "error", role: "alert" });
  }

  /** Runs `fn`; its string result (else `done`) goes to the status line, a failure's
   * message to the alert. Resolves to whether it worked. */
  async run(done, fn) {
    try {
      const said = await fn();
      this.error.textContent = "";
      this.status.textContent = typeof said === "string" ? said : done;
      return true;
    } catch (e) {
      this.status.textContent = "";
      this.error.textContent = e.message;
      return false;
    }
  }
}
