// An Express app for keel's buildpack tests: answers on $PORT.
const express = require("express");
const app = express();
app.get("/", (req, res) => res.send(`hello from express on ${process.env.DYNO}\n`));
app.listen(process.env.PORT || 5000, "0.0.0.0");
