import time, sys, torch
from nanodet.util.config import read_config
from nanodet.data.dataset import build_dataset
from nanodet.trainer.builders import build_train_loader
cfg = read_config("cfg/synthetic.yml", ["data.train.root=data/synthetic_320", "device.gpu_augment=true",
                                        "device.batchsize_per_gpu=256", "device.channels_last=true"])
ds = build_dataset(cfg.data.train, "train", class_names=cfg.class_names)
t = time.perf_counter(); loader = build_train_loader(ds, cfg, torch.device("cuda")); print("cache build s", time.perf_counter() - t)
it = iter(loader); next(it); torch.cuda.synchronize()
for sync in (True, False):
    t = time.perf_counter(); n = 0
    for batch in it:
        n += 1
        if sync: torch.cuda.synchronize()
        if n == 15: break
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / n
    print(f"sync={sync}: {dt*1000:.1f} ms/batch, {256/dt:.0f} img/s"); it = iter(loader)
import cProfile, pstats
it = iter(loader); next(it)
pr = cProfile.Profile(); pr.enable()
for i, b in zip(range(10), it): pass
torch.cuda.synchronize(); pr.disable()
pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
