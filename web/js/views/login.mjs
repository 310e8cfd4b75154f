// The login form: "User name", "Password", "Log in".
import { api } from "../api.mjs";
import { h } from "../dom.mjs";

export function loginView(onLoggedIn) {
  const error = h("p", { class: "error", role: "alert" });
  const name = h("input", { id: "login-name", name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const button = h("button", { type: "submit" }, "Log in");
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Confab"),
    h("label", { for: "login-name" }, "User name", name),
    h("label", { for: "login-password" }, "Password", password),
    button, error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      const answer = await api.login(name.value.trim(), password.value);
      password.value = "";
      onLoggedIn(answer.userId);
    } catch (err) {
      error.textContent = err.message;
      button.disabled = false;
      password.focus();
    }
  });
  queueMicrotask(() => name.focus());
  return form;
}
