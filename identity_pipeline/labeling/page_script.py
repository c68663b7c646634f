"""Script every page of the labeling app shares, written once and inlined into each page."""

# el("button", {text: "Yes", onclick: f}, [children]): a DOM element in one expression.
ELEMENT_HELPER = """function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
"""
