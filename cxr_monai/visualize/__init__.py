from cxr_monai.visualize.figures import difference_map, heatmap_overlay, inpainting_grid, save_png, to_uint8

__all__ = ["difference_map", "heatmap_overlay", "inpainting_grid", "save_png", "to_uint8"]
